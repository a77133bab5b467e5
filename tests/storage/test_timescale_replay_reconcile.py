"""The SQL of replay and reconciliation on a real TimescaleDB engine (PGlite + TimescaleDB, see
tests/timescale/): the replay window over the hypertable in exchange-time order, the coverage
holes, and the merged read preferring the broker (migration 0014)."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.timescale.engine import TimescaleEngine, tick_row
from trading_helper.storage import sql_candles, sql_replay
from trading_helper.timeframes import IST

DAY = datetime(2025, 6, 2, 9, 15, tzinfo=IST)
M = timedelta(minutes=1)


def at(value: str) -> datetime:
    """A timestamp as the engine answers it (ISO text in UTC)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_replay_and_reconcile_sql_on_timescaledb(timescale_engine: TimescaleEngine) -> None:
    engine = timescale_engine
    engine.reset()
    engine.query(
        "INSERT INTO instruments (id, exchange, tradingsymbol) VALUES (1, 'NSE', 'TSA') ON CONFLICT DO NOTHING"
    )
    engine.query(
        "INSERT INTO market_sessions (calendar, day, session) VALUES ('NSE', $1::date, tstzrange($2, $3))"
        " ON CONFLICT DO NOTHING",
        DAY.date().isoformat(),
        DAY.isoformat(),
        (DAY + timedelta(hours=6, minutes=15)).isoformat(),
    )
    engine.query(
        "INSERT INTO live_coverage (instrument_id, broker, period, open) VALUES "
        "(1, 'kite', tstzrange($1, $2), false)",
        DAY.isoformat(),
        (DAY + 10 * M).isoformat(),
    )
    # trade times in order, exchange stamps out of it: the replay follows the exchange's
    rows = [
        tick_row(
            DAY + 2 * M, 1, 100.0, 5, None, exchange_time=(DAY + 2 * M + timedelta(seconds=50)).isoformat()
        ),
        tick_row(DAY + 2 * M + timedelta(seconds=10), 1, 100.5, 5, None),
        tick_row(
            DAY + 3 * M, 1, 101.0, 5, None, exchange_time=(DAY + 3 * M + timedelta(seconds=1)).isoformat()
        ),
    ]
    engine.load(rows)
    window = engine.fetch(sql_replay.WINDOW, [1], DAY.isoformat(), (DAY + 10 * M).isoformat())
    assert [r["ltp"] for r in window] == [100.5, 100.0, 101.0]
    holes = engine.fetch(sql_replay.HOLES, [1], DAY.isoformat(), (DAY + 20 * M).isoformat())
    assert [(r["instrument_id"], at(r["lo"]), at(r["hi"])) for r in holes] == [
        (1, DAY + 10 * M, DAY + 20 * M)
    ]

    engine.query(
        "INSERT INTO broker_candles (instrument_id, timeframe, bucket, open, high, low, close, volume, source)"
        " VALUES (1, '1m', $1, 99, 102, 98, 101.5, 30, 'kite')",
        (DAY + 2 * M).isoformat(),
    )
    span = (DAY.isoformat(), (DAY + 10 * M).isoformat())
    live = engine.fetch(sql_candles.READ_PREFER, 1, "1m", *span, "live")
    assert live == engine.fetch(sql_candles.READ, 1, "1m", *span)
    broker = engine.fetch(sql_candles.READ_PREFER, 1, "1m", *span, "broker")
    assert [(r["close"], r["source"]) for r in live] == [(100.5, "live"), (101.0, "live")]
    assert [(r["close"], r["source"]) for r in broker] == [(101.5, "broker"), (101.0, "live")]
