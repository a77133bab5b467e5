"""The retention table on plain PostgreSQL: whole tick partitions dropped, candles and broker
history pruned per timeframe, and fetched ranges clipped so pruned history counts as a gap again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from tests.storage.helpers import make_instruments, reset_market_data


async def test_apply_retention_follows_the_table(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    [iid] = await make_instruments(db_pool, 1, prefix="RET")
    now = datetime.now(UTC)
    old_day = (now - timedelta(days=9)).replace(hour=6, minute=0, second=0, microsecond=0)
    async with db_pool.acquire() as conn:
        await conn.execute("SELECT ensure_tick_partitions($1, $1)", old_day)
        await conn.execute(
            "INSERT INTO tick_data (time, instrument_id, ltp, received_at) VALUES ($1, $2, 1, $1)",
            old_day,
            iid,
        )
        for tf, age in (("1m", 40), ("1m", 10), ("1d", 4000)):
            await conn.execute(
                "INSERT INTO broker_candles (instrument_id, timeframe, bucket, open, high, low, close, volume, source)"
                " VALUES ($1, $2, $3, 1, 1, 1, 1, 1, 'sim')",
                iid,
                tf,
                now - timedelta(days=age),
            )
        await conn.execute(
            "INSERT INTO fetch_coverage (instrument_id, timeframe, period, candles, source) VALUES "
            "($1, '1m', tstzrange($2, $3), 1, 'sim'), ($1, '1m', tstzrange($4, $5), 1, 'sim')",
            iid,
            now - timedelta(days=50),
            now - timedelta(days=35),  # wholly past 30 days: dropped
            now - timedelta(days=40),
            now - timedelta(days=10),
        )  # straddles: clipped
        dropped = await conn.fetchval("SELECT apply_retention($1)", now)
        partitions = {
            r[0]
            for r in await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'tick_data'::regclass"
            )
        }
        history = sorted(
            (r[0], round((now - r[1]) / timedelta(days=1)))
            for r in await conn.fetch("SELECT timeframe, bucket FROM broker_candles")
        )
        coverage = await conn.fetch("SELECT lower(period), upper(period) FROM fetch_coverage")
    assert dropped >= 1 and f"tick_data_{old_day:%Y%m%d}" not in partitions
    assert history == [("1d", 4000), ("1m", 10)]
    assert [(r[0], r[1]) for r in coverage] == [(now - timedelta(days=30), now - timedelta(days=10))]
