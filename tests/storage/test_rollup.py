"""The plain-PostgreSQL rollup's cost follows the minute it rebuilds (migration 0018): the tick
partitions' BRIN ranges are summarised at each refresh, and the 1m level reads the minute by that
index, on one core, without JIT. Real PostgreSQL; the plan is the one the server runs, logged
by auto_explain as a notice to this connection. The candles it builds are checked against an
independent computation in test_candles_property.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.ingest.direct_writer import DirectWriter
from tests.storage.candles import read_live_candles, refresh_candles
from tests.storage.helpers import make_instruments, reset_market_data
from tests.storage.test_ticks import tick
from trading_helper.timeframes import IST

pytestmark = pytest.mark.flavour("postgres", "the service's own rollup runs only on plain PostgreSQL")


async def test_a_refresh_leaves_no_brin_range_of_the_ticks_unsummarised(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    [a] = await make_instruments(db_pool, 1, prefix="BRIN")
    writer = await DirectWriter.open(db_pool)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)

    async def fill(first_ms: int) -> None:
        """More than a BRIN range (128 pages) of ticks: only whole ranges are summarised."""
        ms = range(first_ms, first_ms + 15_000)
        await writer.write(
            [tick(a, start + timedelta(milliseconds=m), 100.0, volume=m + 1, qty=1) for m in ms]
        )

    async with db_pool.acquire() as conn:
        await fill(0)
        assert await conn.fetchval("SELECT tick_brin_summarize()") >= 1  # a whole range, new
        await fill(15_000)
        await refresh_candles(conn)
        assert await conn.fetchval("SELECT tick_brin_summarize()") == 0  # the refresh did it


async def test_the_minute_is_read_by_the_brin_index_on_one_core_without_jit(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    ids = await make_instruments(db_pool, 200, prefix="PLAN")
    a = ids[0]
    writer = await DirectWriter.open(db_pool)
    # 10:00 IST of a day that has passed it: the day's first tick comes after the session open, so
    # it counts its last quantity, not the day's volume so far (ingest/volume.py). A minute taken
    # from the clock made the expected volume depend on the hour the test ran.
    now = datetime.now(IST)
    minute = (now if now.hour >= 11 else now - timedelta(days=1)).replace(
        hour=10, minute=0, second=0, microsecond=0
    )
    # enough ticks (five minutes of 200 instruments, one a second each) that the planner weighs
    # the index against the day as it would at scale
    others = [
        tick(i, minute + timedelta(seconds=s, microseconds=n), 20.0, volume=s + 1000, qty=1)
        for s in range(-240, 60)
        for n, i in enumerate(ids[1:])
    ]
    await writer.write(
        [tick(a, minute + timedelta(seconds=s), 10.0 + s, volume=s + 1, qty=1, oi=s) for s in (5, 1, 30, 59)]
        + others
    )
    plans: list[str] = []

    def logged(_conn: object, message: asyncpg.PostgresLogMessage) -> None:
        plans.append(message.message)

    async with db_pool.acquire() as conn:
        conn.add_log_listener(logged)
        try:
            await conn.execute("LOAD 'auto_explain'")
            await conn.execute(
                "SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;"
                "SET auto_explain.log_level = notice; SET client_min_messages = notice"
            )
            await refresh_candles(conn)
            await conn.execute("RESET auto_explain.log_min_duration")
        finally:
            conn.remove_log_listener(logged)
        (rollup,) = [p for p in plans if "INSERT INTO candles_1m_mat" in p]
        assert "Bitmap Index Scan on tick_data_" in rollup and "_time_idx" in rollup, rollup
        assert "Seq Scan on tick_data" not in rollup and "Gather" not in rollup, rollup
        assert "JIT" not in rollup, rollup
        [c] = await read_live_candles(conn, a, "1m", minute, minute + timedelta(minutes=1))
    # open and close by time, not by arrival; the open interest of the last tick; volume 1 (the
    # first tick's quantity) + 0 (volume 2 arrived late) + 25 + 29
    assert (c.open, c.high, c.low, c.close, c.open_interest, c.volume) == (11.0, 69.0, 11.0, 69.0, 59, 55)


async def test_a_role_that_does_not_own_the_ticks_gets_minus_one_not_an_error(db_pool: asyncpg.Pool) -> None:
    """Only a table's owner may summarise its BRIN ranges: for another role (a read-write role
    of a managed database, say) the function says so with -1 and the rollup goes on."""
    role = "th_test_not_owner"
    await reset_market_data(db_pool)
    [a] = await make_instruments(db_pool, 1, prefix="OWNER")
    writer = await DirectWriter.open(db_pool)
    await writer.write([tick(a, datetime.now(UTC) - timedelta(minutes=1), 100.0, volume=1, qty=1)])
    async with db_pool.acquire() as conn:
        await conn.execute(f"DROP ROLE IF EXISTS {role}")
        await conn.execute(f"CREATE ROLE {role}")
        try:
            await conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
            await conn.execute(f"GRANT EXECUTE ON FUNCTION tick_brin_summarize() TO {role}")
            async with conn.transaction():
                await conn.execute(f"SET LOCAL ROLE {role}")
                assert await conn.fetchval("SELECT tick_brin_summarize()") == -1
            assert await conn.fetchval("SELECT tick_brin_summarize()") >= 0  # the owner may
        finally:
            await conn.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
            await conn.execute(f"REVOKE ALL ON FUNCTION tick_brin_summarize() FROM {role}")
            await conn.execute(f"DROP ROLE {role}")
