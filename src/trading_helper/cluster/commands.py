"""The processes behind ``trading-helper collect`` and ``trading-helper write``: their pools and
Redis client, opened and closed around a :class:`~.collector.Collector` or :class:`~.writers.Writers`."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from trading_helper.config import Settings
from trading_helper.ingest.redisconn import redis_client
from trading_helper.runner import collect_less_often, freeze_startup_heap
from trading_helper.storage.db import create_pool


async def run_collect(
    settings: Settings, *, shards: Sequence[str] = (), max_shards: int | None = None
) -> None:
    from trading_helper.cluster.collector import Collector

    settings.require_broker_keys()
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_pool(settings.DATABASE_URL, min_size=0, max_size=settings.INGEST_DB_POOL_SIZE)
        stack.push_async_callback(pool.close)
        redis = redis_client(settings.REDIS_URL)
        stack.push_async_callback(redis.aclose)
        collector = Collector(settings, pool, redis, shards=shards, max_shards=max_shards)
        freeze_startup_heap()
        collect_less_often()
        await collector.run()


async def run_write(settings: Settings) -> None:
    from trading_helper.cluster.writers import Writers

    async with contextlib.AsyncExitStack() as stack:
        pool = await create_pool(settings.DATABASE_URL, min_size=0, max_size=settings.INGEST_DB_POOL_SIZE * 2)
        stack.push_async_callback(pool.close)
        redis = redis_client(settings.REDIS_URL)
        stack.push_async_callback(redis.aclose)
        await Writers(settings, pool, redis).run()
