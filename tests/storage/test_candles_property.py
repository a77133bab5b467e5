"""Every candle of every timeframe equals an independent computation from the raw ticks
(plain PostgreSQL flavour; the TimescaleDB flavour has the same test in test_timescale_engine)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import oracle
from tests.ingest.direct_writer import DirectWriter
from tests.storage.candles import refresh_candles
from tests.storage.helpers import make_instruments, reset_market_data
from trading_helper.models import Tick
from trading_helper.timeframes import IST

EDGES = [0, 1, 59, 60, 299, 300, 899, 900, 3599, 3600, 86_399]  # seconds from an aligned bucket start

raw_tick = st.tuples(
    st.integers(0, 3),  # instrument index
    st.one_of(
        st.integers(0, 2 * 86_400 - 1),  # any second of two IST days ...
        st.builds(
            lambda base, edge: base + edge,  # ... or exactly on/next to bucket edges
            st.sampled_from([0, 9 * 3600 + 15 * 60, 13 * 3600, 86_400 + 15 * 60]),
            st.sampled_from(EDGES),
        ),
    ),
    st.integers(1, 400),  # price in ticks of 0.05
    st.integers(0, 500),  # traded quantity (increment of the day's volume)
    st.one_of(st.none(), st.integers(0, 10**6)),  # open interest
)


def build_ticks(
    ids: list[int], raw: list[tuple[int, int, int, int, int | None]], order: list[int]
) -> list[Tick]:
    base = datetime.now(IST).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    # cumulative day volume grows with exchange time, per instrument and IST day
    by_time = sorted(range(len(raw)), key=lambda i: (raw[i][0], raw[i][1]))
    cumulative: dict[tuple[int, int], int] = defaultdict(int)
    volume_of = {}
    for i in by_time:
        inst, sec, _, qty, _ = raw[i]
        cumulative[(inst, sec // 86_400)] += qty
        volume_of[i] = cumulative[(inst, sec // 86_400)]
    received = datetime.now(UTC)
    return [
        Tick(
            instrument_id=ids[raw[i][0]],
            exchange_ts=base + timedelta(seconds=raw[i][1]),
            received_ts=received,
            last_price=round(raw[i][2] * 0.05, 2),
            last_quantity=raw[i][3],
            volume=volume_of[i],
            open_interest=raw[i][4],
        )
        for i in order
    ]


async def database_candles(pool: asyncpg.Pool) -> dict[oracle.Key, oracle.Ohlc]:
    out: dict[oracle.Key, oracle.Ohlc] = {}
    for tf in oracle.WIDTHS:
        for r in await pool.fetch(f"SELECT * FROM candles_{tf}"):
            out[(tf, r["instrument_id"], r["bucket"])] = (
                r["open"],
                r["high"],
                r["low"],
                r["close"],
                r["volume"],
                r["open_interest"],
                r["tick_count"],
            )
    return out


@pytest.mark.flavour(
    "postgres",
    "the TimescaleDB flavour has this property test on the engine "
    "(tests/storage/test_timescale_engine.py), where it runs without a scheduler",
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.lists(raw_tick, min_size=1, max_size=150), data=st.data(), waves=st.integers(1, 3))
async def test_every_candle_matches_the_ticks(
    db_pool: asyncpg.Pool, raw: list[tuple[int, int, int, int, int | None]], data: st.DataObject, waves: int
) -> None:
    await reset_market_data(db_pool)
    ids = await make_instruments(db_pool, 4, prefix="PROP")
    shuffled = data.draw(st.booleans())
    order = (
        data.draw(st.permutations(range(len(raw))))
        if shuffled
        else sorted(range(len(raw)), key=lambda i: raw[i][1])
    )
    ticks = build_ticks(ids, raw, list(order))
    writer = await DirectWriter.open(db_pool)
    # arrive in several batches with a refresh between some of them (late ticks below the watermark)
    cut = sorted({len(ticks) * k // waves for k in range(1, waves)})
    for chunk in (ticks[a:b] for a, b in zip([0, *cut], [*cut, len(ticks)], strict=True)):
        result = await writer.write(chunk)
        assert result.written == len(chunk) and not result.rejected
        async with db_pool.acquire() as conn:
            await refresh_candles(conn)
    stored = [
        oracle.RawTick(r[0], r[1], r[2], r[3], r[4])
        for r in await db_pool.fetch(
            "SELECT time, instrument_id, ltp, volume_delta, open_interest FROM tick_data"
        )
    ]
    expected = oracle.stored_trades(ticks)
    assert sorted(stored, key=lambda t: (t.instrument_id, t.time)) == sorted(
        expected, key=lambda t: (t.instrument_id, t.time)
    )
    assert await database_candles(db_pool) == oracle.candles(expected)
