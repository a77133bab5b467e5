"""The SQL side of the timeframe facts, on both flavours (plain PostgreSQL here, TimescaleDB on the
Node engine): th_bucket() buckets as Timeframe.bucket_start does, and the widths and retention the
migrations hold are the ones of trading_helper.timeframes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from tests.timescale.engine import TimescaleEngine
from trading_helper.timeframes import BUCKET_ORIGIN, IST, TICK_RETENTION, Timeframe

#: around the origin, session marks, midnight IST, a leap day, and far from the origin
SAMPLES = [
    BUCKET_ORIGIN,
    BUCKET_ORIGIN - timedelta(microseconds=1),
    datetime(2026, 11, 24, 9, 14, 59, tzinfo=IST),
    datetime(2026, 11, 24, 9, 15, tzinfo=IST),
    datetime(2026, 11, 25, 0, 10, tzinfo=IST),
    datetime(2024, 2, 29, 15, 29, 59, 999_999, tzinfo=IST),
    datetime(1996, 7, 1, 23, 59, tzinfo=IST),
    datetime(2099, 12, 31, 12, 34, 56, tzinfo=IST),
]

#: per timeframe: its width in seconds, and its retention in seconds (months and years as SQL counts
#: them from the epoch: the interval's epoch value); one query for both flavours
FACTS_SQL = (
    "SELECT extract(epoch FROM timeframe_width($1))::float8, "
    "(SELECT extract(epoch FROM keep)::float8 FROM retention_policy WHERE relation = 'candles_' || $1)"
)
RETENTION_SQL = "SELECT extract(epoch FROM $1::text::interval)::float8"
BUCKET_SQL = (
    "SELECT th_bucket($1::interval, $2::timestamptz) = $3::timestamptz, th_bucket_origin() = $4::timestamptz"
)


def expected(tf: Timeframe) -> tuple[float, str | None]:
    return tf.width.total_seconds(), tf.facts.retention


async def test_bucketing_and_facts_on_postgres(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        for tf in Timeframe:
            for ts in SAMPLES:
                same, origin = await conn.fetchrow(
                    BUCKET_SQL, tf.width, ts, tf.bucket_start(ts), BUCKET_ORIGIN
                )
                assert same and origin, (tf, ts)
            width, keep = await conn.fetchrow(FACTS_SQL, tf.value)
            retention = tf.facts.retention
            assert width == tf.width.total_seconds()
            assert keep == (None if retention is None else await conn.fetchval(RETENTION_SQL, retention)), tf
        assert await conn.fetchval(
            "SELECT keep = $1::text::interval FROM retention_policy WHERE relation = 'tick_data'",
            TICK_RETENTION,
        )
        assert await conn.fetchval("SELECT timeframe_width('2m')") is None


def test_bucketing_and_facts_on_timescaledb(timescale_engine: TimescaleEngine) -> None:
    engine = timescale_engine

    def one(sql: str, *params: Any) -> list[Any]:
        return engine.query(sql, *params)[0]

    for tf in Timeframe:
        for ts in SAMPLES:
            same, origin = one(
                BUCKET_SQL,
                f"{tf.width.total_seconds()} seconds",
                ts.isoformat(),
                tf.bucket_start(ts).isoformat(),
                BUCKET_ORIGIN.isoformat(),
            )
            assert same and origin, (tf, ts)
        width, keep = one(FACTS_SQL, tf.value)
        retention = tf.facts.retention
        assert width == tf.width.total_seconds()
        assert keep == (None if retention is None else one(RETENTION_SQL, retention)[0]), tf
        # the continuous aggregates' own policies keep what the table says
        if retention is not None:
            policy = one(
                "SELECT extract(epoch FROM (config->>'drop_after')::interval)::float8 "
                "FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention' "
                "AND hypertable_name = $1",
                tf.relation,
            )[0]
            assert policy == one(RETENTION_SQL, retention)[0], tf
    assert one(
        "SELECT keep = $1::text::interval FROM retention_policy WHERE relation = 'tick_data'", TICK_RETENTION
    )[0]
