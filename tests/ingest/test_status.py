"""The published status keeps its types: numbers, booleans, null and objects come back as they
were written (``trading-helper status --json`` and ``/api/status`` print them typed)."""

from __future__ import annotations

from trading_helper.ingest.status import decode_status, encode_status


def test_status_fields_round_trip_with_their_types() -> None:
    status = {
        "broker": "kite",
        "feed_state": "connected",
        "subscriptions": 20,
        "received": 1834021,
        "rejected": {"unknown_token": 3},
        "redis_down": False,
        "db_down": True,
        "last_commit_at": None,
        "rate": 12.5,
    }
    raw = {k.encode(): v.encode() for k, v in encode_status(status).items()}  # as redis-py returns them
    assert decode_status(raw) == status


def test_a_field_that_is_not_json_stays_text() -> None:
    assert decode_status({b"feed_state": b"connected", b"written": b"12"}) == {
        "feed_state": "connected",
        "written": 12,
    }
