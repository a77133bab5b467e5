"""The tick codec and the stream entries carry the last-trade time, and still read what was
written before it was carried (entries and quotes left in Redis across an upgrade)."""

from __future__ import annotations

import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from trading_helper.ingest import codec
from trading_helper.ingest.batch import VolumeReset
from trading_helper.ingest.stream import decode_entry, reset_fields
from trading_helper.ingest.volume import from_us, to_us
from trading_helper.models import DepthLevel, Tick

NOW = datetime(2026, 11, 30, 4, 0, 1, 250_000, tzinfo=UTC)
_LEGACY = struct.Struct("<qqidqqdqdqdq")  # the record before schema version 6, written out again


def tick(trade: datetime | None) -> Tick:
    return Tick(
        instrument_id=7,
        exchange_ts=NOW,
        received_ts=NOW + timedelta(milliseconds=300),
        last_price=101.5,
        last_quantity=25,
        volume=10_000,
        average_price=101.2,
        open_interest=None,
        bid_price=101.45,
        bid_quantity=10,
        ask_price=None,
        ask_quantity=None,
        trade_ts=trade,
    )


def legacy_record(t: Tick) -> bytes:
    return _LEGACY.pack(
        to_us(t.exchange_ts),
        to_us(t.received_ts),
        t.instrument_id,
        t.last_price,
        t.last_quantity,
        t.volume,
        t.average_price,
        -1,
        t.bid_price,
        t.bid_quantity,
        float("nan"),
        -1,
    )


def test_ticks_round_trip_with_and_without_a_trade_time() -> None:
    ticks = [tick(NOW - timedelta(seconds=40)), tick(None)]
    assert codec.decode_ticks(codec.encode_ticks(ticks)) == ticks
    [a, b] = decode_entry(b"1-0", {b"u": codec.encode_ticks(ticks)}).items
    assert a[-1] == to_us(NOW - timedelta(seconds=40)) and b[-1] == -1  # type: ignore[index]


def test_entries_written_before_the_trade_time_are_read() -> None:
    old = tick(None)
    entry = decode_entry("2-0", {b"t": legacy_record(old) * 2})
    assert not entry.malformed and repr(entry.items) == repr([codec.tick_record(old)] * 2)  # NaN: by repr
    assert decode_entry("3-0", {b"t": legacy_record(old)[:-1]}).malformed
    # a reset without its time (before version 6), and one with it
    assert decode_entry("4-0", {b"r": struct.pack("<2i", 3, 9)}).items == [VolumeReset(frozenset({3, 9}))]
    assert decode_entry("5-0", reset_fields({9, 3}, to_us(NOW))).items == [
        VolumeReset(frozenset({3, 9}), to_us(NOW))
    ]
    assert decode_entry("6-0", {b"r": b"\x01\x02\x03"}).malformed


def test_quotes_of_both_layouts_are_read() -> None:
    t = tick(NOW - timedelta(seconds=2))
    t.bids, t.asks = (DepthLevel(101.45, 10, 2),), (DepthLevel(101.55, 4, 1), DepthLevel(101.6, 9, 3))
    assert codec.decode_quote(codec.encode_quote(t)) == t
    plain = tick(None)
    assert codec.decode_quote(codec.encode_quote(plain)) == plain
    # values written before version 6: no trade time, with and without depth
    legacy = legacy_record(t)
    old = codec.decode_quote(legacy)
    assert (old.instrument_id, old.last_price, old.trade_ts, old.bids) == (7, 101.5, None, ())
    with_depth = (
        legacy
        + bytes((1, 2))
        + b"".join(struct.pack("<dqi", lv.price, lv.quantity, lv.orders) for lv in (*t.bids, *t.asks))
    )
    old = codec.decode_quote(with_depth)
    assert (old.bids, old.asks, old.trade_ts) == (t.bids, t.asks, None)
    assert codec.tick_to_json(t)["trade_ts"] == (NOW - timedelta(seconds=2)).isoformat()


def test_quote_records_are_the_quotes_without_their_objects() -> None:
    """decode_quote_record (the option chain's reader) gives the record decode_quote builds its
    tick from, for both layouts, with and without depth."""
    t = tick(NOW - timedelta(seconds=2))
    t.bids, t.asks = (DepthLevel(101.45, 10, 2),), (DepthLevel(101.55, 4, 1),)
    for value in (codec.encode_quote(t), codec.encode_quote(tick(None)), legacy_record(t)):
        rec = codec.decode_quote_record(value)
        # compared packed: a missing price is NaN, never equal to itself
        assert codec.RECORD.pack(*rec) == codec.RECORD.pack(*codec.tick_record(codec.decode_quote(value)))
        assert from_us(rec[0]) == codec.decode_quote(value).exchange_ts
    assert codec.decode_quote_record(legacy_record(t))[-1] == -1  # no trade time before version 6


def test_a_filtered_decode_builds_only_the_ticks_asked_for() -> None:
    ticks = [replace(tick(None), instrument_id=i, last_price=100.0 + i) for i in (1, 2, 3, 2)]
    payload = codec.encode_ticks(ticks)
    assert codec.decode_ticks_of(payload, {2}) == [
        t for t in codec.decode_ticks(payload) if t.instrument_id == 2
    ]
    assert [t.last_price for t in codec.decode_ticks_of(payload, {2, 3})] == [102.0, 103.0, 102.0]
    assert codec.decode_ticks_of(payload, set()) == []
    with pytest.raises(ValueError, match="not a multiple"):
        codec.decode_ticks_of(payload[:-1], {2})
