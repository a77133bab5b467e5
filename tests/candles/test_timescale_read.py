"""The gap arithmetic and the merged read path on a real TimescaleDB engine (PGlite + TimescaleDB
in Node, tests/timescale), where the candle relations are continuous aggregates."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.candles.helpers import ist, minutes
from tests.timescale.engine import TimescaleEngine, tick_row

DAY = (2025, 6, 3)  # a Tuesday


@pytest.fixture(scope="module")
def engine(timescale_engine: TimescaleEngine) -> TimescaleEngine:
    return timescale_engine


def at(h: int, m: int, s: int = 0) -> datetime:
    return ist(*DAY, h, m, s)


def test_read_path_and_gaps_on_timescaledb(engine: TimescaleEngine) -> None:
    iid = engine.query(
        "INSERT INTO instruments (exchange, tradingsymbol) VALUES ('NSE', 'TSREAD') RETURNING id"
    )[0][0]
    engine.query(
        "INSERT INTO market_sessions (calendar, day, session) VALUES ('NSE', $1::date, tstzrange($2, $3))",
        at(0, 0).date().isoformat(),
        at(9, 15).isoformat(),
        at(15, 30).isoformat(),
    )
    # captured all session except 10:00:00-10:02:30 (a reconnect); one trade a minute, and one at 10:02:40
    for lo, hi in ((at(9, 10), at(10, 0)), (at(10, 2, 30), at(15, 35))):
        engine.query(
            "INSERT INTO live_coverage (instrument_id, broker, period, open) "
            "VALUES ($1, 'kite', tstzrange($2, $3), false)",
            iid,
            lo.isoformat(),
            hi.isoformat(),
        )
    stamps = [
        t + timedelta(seconds=20) for t in minutes(at(9, 15), at(15, 30)) if not at(10, 0) <= t < at(10, 3)
    ]
    engine.load(
        [tick_row(t, iid, 100.0 + n * 0.05, 10, None) for n, t in enumerate([*stamps, at(10, 2, 40)])]
    )
    engine.refresh(at(0, 0) - timedelta(days=2), at(0, 0) + timedelta(days=2))

    gaps = engine.query(
        "SELECT lower(r), upper(r) FROM candle_gaps($1, '1m', $2, $3, $4) AS r",
        iid,
        at(0, 0).isoformat(),
        (at(0, 0) + timedelta(days=1)).isoformat(),
        (at(0, 0) + timedelta(days=2)).isoformat(),
    )
    assert [[datetime.fromisoformat(a), datetime.fromisoformat(b)] for a, b in gaps] == [
        [at(10, 0), at(10, 3)]
    ]
    for m in range(3):
        engine.query(
            "INSERT INTO broker_candles (instrument_id, timeframe, bucket, open, high, low, close, volume, "
            "source) VALUES ($1, '1m', $2, 1, 2, 0.5, 1.5, 99, 'kite')",
            iid,
            at(10, m).isoformat(),
        )
    engine.query(
        "INSERT INTO fetch_coverage (instrument_id, timeframe, period, candles, source) "
        "VALUES ($1, '1m', tstzrange($2, $3), 3, 'kite')",
        iid,
        at(10, 0).isoformat(),
        at(10, 3).isoformat(),
    )
    assert engine.query(
        "SELECT count(*) FROM candle_gaps($1, '1m', $2, $3, $4)",
        iid,
        at(0, 0).isoformat(),
        (at(0, 0) + timedelta(days=1)).isoformat(),
        (at(0, 0) + timedelta(days=2)).isoformat(),
    ) == [[0]]

    rows = engine.query(
        "SELECT bucket, source, volume FROM read_candles($1, '1m', $2, $3)",
        iid,
        at(0, 0).isoformat(),
        (at(0, 0) + timedelta(days=1)).isoformat(),
    )
    buckets = [datetime.fromisoformat(b) for b, _, _ in rows]
    assert len(buckets) == 375 and buckets == sorted(set(buckets))
    sources = {datetime.fromisoformat(b): s for b, s, _ in rows}
    assert {sources[at(10, m)] for m in range(3)} == {"broker"}  # 10:02 was only half captured
    assert {s for b, s in sources.items() if not at(10, 0) <= b < at(10, 3)} == {"live"}

    daily = engine.query(
        "SELECT source FROM read_candles($1, '1d', $2, $3)",
        iid,
        at(0, 0).isoformat(),
        (at(0, 0) + timedelta(days=1)).isoformat(),
    )
    assert daily == [["partial"]]  # the day had a hole and no broker day candle
    hourly = engine.query(
        "SELECT count(*) FILTER (WHERE source = 'live'), count(*) FROM read_candles($1, '1h', $2, $3)",
        iid,
        at(0, 0).isoformat(),
        (at(0, 0) + timedelta(days=1)).isoformat(),
    )
    assert hourly == [[6, 7]]  # 09:15 .. 15:15; the 09:15 hour holds the hole
