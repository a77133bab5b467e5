"""``bench query``'s TimescaleDB load path on the TimescaleDB engine: the live days' ticks
aggregate back to exactly the 1m bars the plain flavour loads into its rollup table, and every
higher level equals an independent aggregation. (The bench itself needs a TimescaleDB server to
be timed: asyncpg cannot reach the engine.)"""

from __future__ import annotations

from datetime import UTC, date

from tests.oracle import RawTick, candles
from tests.storage.test_timescale_engine import assert_same_candles, rows_of, wide_window
from tests.timescale.engine import TimescaleEngine
from trading_helper.bench.query_data import Dataset, _live_rows, live_ticks, trading_days


def test_the_live_days_load_as_ticks_that_aggregate_to_the_same_candles(
    timescale_engine: TimescaleEngine,
) -> None:
    engine = timescale_engine
    engine.reset()
    days = trading_days(date(2025, 3, 3), date(2025, 3, 5))
    data = Dataset([1, 3], [], days, [])
    ticks = [
        RawTick(t[0], t[1], t[2], t[3], None) for iid in data.instrument_ids for t in live_ticks(iid, data)
    ]
    engine.load(rows_of(ticks))
    engine.refresh(*wide_window(ticks))
    got = engine.candles()
    bars = {
        ("1m", r[1], r[0].astimezone(UTC)): r[2:7]
        for iid in data.instrument_ids
        for r in _live_rows(iid, data)
    }
    assert bars and {k: v[:5] for k, v in got.items() if k[0] == "1m"} == bars
    assert any(iid == 3 for _, iid, _ in bars)  # the illiquid one is there, with its missing minutes
    assert len([k for k in bars if k[1] == 3]) < len([k for k in bars if k[1] == 1])
    assert_same_candles(got, candles(ticks))
