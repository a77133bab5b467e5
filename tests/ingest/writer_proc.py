"""A stream writer in its own process, to be killed by tests: python -m tests.ingest.writer_proc DSN REDIS STREAM."""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import redis.asyncio as aioredis

from trading_helper.ingest.writer import StreamWriter


async def main(dsn: str, redis_url: str, stream: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    redis = aioredis.Redis.from_url(redis_url)
    # small batches (3 entries of 100 ticks, never joined into larger ones while a commit runs), so
    # that a kill lands between commits and inside them, not after one large batch
    await StreamWriter(redis, pool, stream=stream, entries_per_read=3, max_ticks_per_batch=300).run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
