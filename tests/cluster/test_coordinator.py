"""The coordinator (cluster/coordinator.py) on a real database and a Redis of the test's own: the
plan from the subscriptions, published once per change, and NOTIFY subscriptions_changed heard."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from trading_helper.bench.soak.processes import RedisServer
from trading_helper.brokers.sim import SimBroker
from trading_helper.cluster.coordinator import Coordinator, PlanReader, read_plan, store_plan
from trading_helper.cluster.plan import plan_shards
from trading_helper.config import Settings
from trading_helper.errors import ConfigError
from trading_helper.ingest import keys
from trading_helper.storage import sql_instruments
from trading_helper.storage.instruments import sync_instruments


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[aioredis.Redis]:
    server = RedisServer(tmp_path)
    await server.start()
    client = aioredis.Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()
        await server.kill()


async def test_the_plan_follows_the_subscriptions_and_notifications(
    db_pool: asyncpg.Pool, db_dsn: str, own_redis: aioredis.Redis
) -> None:
    settings = Settings(DATABASE_URL=db_dsn, BROKER="sim", SIM_INSTRUMENTS=12)
    broker = SimBroker(settings)
    async with db_pool.acquire() as conn:
        await sync_instruments(conn, "sim", await broker.fetch_instruments())
        await conn.execute("TRUNCATE subscriptions")
        ids = [
            r[0]
            for r in await conn.fetch(
                "SELECT instrument_id FROM instrument_broker_ids WHERE broker = 'sim' ORDER BY 1"
            )
        ]
        await conn.execute("INSERT INTO subscriptions (instrument_id) SELECT unnest($1::integer[])", ids[:5])
    coordinator = Coordinator(settings, db_pool, own_redis)
    plan = await coordinator.publish_once()
    assert plan.summary()["shards"] == {"sim:default:0": 5} and coordinator.plans_published == 1
    await coordinator.publish_once()
    assert coordinator.plans_published == 1  # unchanged: not published again
    stored = await read_plan(own_redis)
    assert stored is not None and sorted(stored.assignment) == sorted(ids[:5])

    listening = asyncio.create_task(coordinator._listen())
    try:
        await asyncio.wait_for(coordinator._changed.wait(), 10)  # set once it listens
        coordinator._changed.clear()
        async with db_pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO subscriptions (instrument_id) SELECT unnest($1::integer[])", ids[5:8]
            )
            await conn.execute(
                "SELECT pg_notify($1, $2)", sql_instruments.SUBSCRIPTIONS_CHANNEL, json.dumps(ids[5:8])
            )
        await asyncio.wait_for(coordinator._changed.wait(), 5)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
    plan = await coordinator.publish_once()
    assert plan.summary()["instruments"] == 8 and plan.moved_from(stored.assignment) == 0
    assert coordinator.plans_published == 2
    await own_redis.set(keys.PLAN, plan_shards("sim", ids[:1], ["default"]).to_json())  # by hand
    await own_redis.delete(keys.PLAN_VERSION)
    assert (await coordinator.publish_once()).summary()["instruments"] == 8  # planned again
    assert coordinator.plans_published == 3
    again = await read_plan(own_redis)
    assert again is not None and again.summary()["instruments"] == 8


async def test_a_plan_is_read_again_only_when_its_version_changed(own_redis: aioredis.Redis) -> None:
    reader = PlanReader(own_redis)
    assert await reader.read() is None
    await store_plan(own_redis, plan_shards("sim", [1, 2], ["default"]).to_json())
    first = await reader.read()
    assert first is not None and sorted(first.assignment) == [1, 2]
    assert await reader.read() is first  # the version alone was read
    await store_plan(own_redis, plan_shards("sim", [1, 2, 3], ["default"]).to_json())
    second = await reader.read()
    assert second is not first and second is not None and sorted(second.assignment) == [1, 2, 3]
    await own_redis.set(keys.PLAN, plan_shards("sim", [4], ["default"]).to_json())  # no version
    await own_redis.delete(keys.PLAN_VERSION)
    third, fourth = await reader.read(), await reader.read()
    assert third is not None and sorted(third.assignment) == [4] and fourth is not third  # read each time


def test_bad_pins_are_a_config_error(db_pool: asyncpg.Pool) -> None:
    with pytest.raises(ConfigError, match="SHARD_PINS"):
        Coordinator(Settings(SHARD_PINS="123"), db_pool, aioredis.Redis())
