"""Small pure pieces of the API: token redaction in logs, ingest rates, forming candles, CORS."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from trading_helper.api.app import cors_origins
from trading_helper.api.forming import FormingCandles, forming_json
from trading_helper.api.routes.status import IngestRates
from trading_helper.models import Tick
from trading_helper.redact import RedactingFilter
from trading_helper.timeframes import IST, Timeframe


def test_websocket_tokens_never_reach_the_logs() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", "/api/ws/ticks?token=s3cr3t-Value_x&x=1"),
        None,
    )
    assert RedactingFilter().filter(record)
    assert "s3cr3t" not in record.getMessage() and "token=***&x=1" in record.getMessage()


def test_ingest_rates_from_successive_reads() -> None:
    rates = IngestRates()
    assert rates.update({"received": "100", "written": 90}) is None
    rates._last = (rates._last[0] - 2.0, 100.0, 90.0)  # type: ignore[index]  # two seconds ago
    got = rates.update({"received": 1100, "written": 1090})
    assert got is not None and 490 <= got["received_per_s"] <= 500 and 490 <= got["written_per_s"] <= 500
    assert rates.update(None) == got


def test_forming_candles_follow_ticks() -> None:
    """The stored candles' rules: the trade's time decides the bucket, no new trade moves nothing,
    volume is the increment (the day's first tick before 09:16 IST brings the pre-open volume)."""
    forming = FormingCandles()
    t0 = datetime(2025, 1, 6, 9, 15, 5, tzinfo=IST)

    def tick(dt: float, price: float, volume: int, traded: float | None = None) -> Tick:
        ts = (t0 + timedelta(seconds=dt)).astimezone(UTC)
        trade = None if traded is None else (t0 + timedelta(seconds=traded)).astimezone(UTC)
        return Tick(
            instrument_id=1,
            exchange_ts=ts,
            received_ts=ts,
            last_price=price,
            volume=volume,
            open_interest=9,
            trade_ts=trade,
        )

    tfs = [Timeframe.M1, Timeframe.M5]
    forming.update(tick(0, 100, 1000, traded=0), tfs)
    forming.update(tick(10, 103, 1010, traded=10), tfs)
    # a quote change 60 s later repeating the last trade: no candle opens in the next minute
    assert forming.update(tick(70, 103, 1010, traded=10), tfs) == []
    changed = dict(forming.update(tick(71, 99, 1025, traded=70), tfs))  # next minute, same 5m bucket
    m1, m5 = changed[Timeframe.M1], changed[Timeframe.M5]
    assert (m1.open, m1.high, m1.low, m1.close, m1.volume) == (99, 99, 99, 99, 15)
    assert (m5.open, m5.high, m5.low, m5.close, m5.volume) == (100, 103, 99, 99, 1025)
    assert forming.update(tick(-60, 1, 1030, traded=-60), [Timeframe.M1]) == []  # a late trade, closed minute
    assert forming_json(m5, 1)["time"] == "2025-01-06T09:15:00+05:30"
    forming.forget(1)  # followed again after 09:16: a first sight brings only its own trade's quantity
    again = tick(200, 50, 1100, traded=200)
    again.last_quantity = 7
    assert forming.update(again, [Timeframe.M1])[0][1].volume == 7


def test_cors_never_allows_everyone() -> None:
    assert cors_origins("http://a:3000, *, http://b/") == ["http://a:3000", "http://b"]
