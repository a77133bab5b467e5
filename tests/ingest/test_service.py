"""The whole ingest service with the simulator broker: ticks land, candles form, coverage is kept."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import redis.asyncio as aioredis

from tests.storage.helpers import reset_market_data
from trading_helper.brokers.sim import SimBroker
from trading_helper.config import Settings
from trading_helper.ingest import keys
from trading_helper.ingest.service import IngestService
from trading_helper.ingest.status import read_status
from trading_helper.storage.instruments import sync_instruments


async def test_service_captures_rolls_up_and_records_coverage(db_pool: asyncpg.Pool, redis_url: str) -> None:
    await reset_market_data(db_pool)
    stream = f"th:svc:{uuid.uuid4().hex[:8]}"
    settings = Settings(
        REDIS_URL=redis_url,
        BROKER="sim",
        SIM_INSTRUMENTS=30,
        SIM_TICKS_PER_SECOND=400,
        TICK_STREAM=stream,
        REFRESH_INTERVAL_S=0.3,
    )
    broker = SimBroker(settings)
    async with db_pool.acquire() as conn:
        await sync_instruments(conn, "sim", await broker.fetch_instruments())
        await conn.execute("TRUNCATE subscriptions, live_coverage")
        await conn.execute(
            "INSERT INTO subscriptions (instrument_id) SELECT id FROM instruments "
            "JOIN instrument_broker_ids b ON b.instrument_id = id AND b.broker = 'sim' "
            "ORDER BY id LIMIT 20"
        )
    redis = aioredis.Redis.from_url(redis_url)
    service = IngestService(settings, db_pool, redis, broker)
    await service.start()
    try:
        for _ in range(200):
            if service.writer.stats.written >= 300 and service.last_refresh_at is not None:
                break
            await asyncio.sleep(0.05)
        assert service.writer.stats.written >= 300, (service.status(), service.task_errors())
        status = service.status()
        assert status["subscriptions"] == 20 and status["feed_state"] == "connected"
        open_ranges = await db_pool.fetchval("SELECT count(*) FROM live_coverage WHERE open")
        assert open_ranges == 20
        extra = await db_pool.fetchval("SELECT max(id) FROM instruments")
        await service.subscribe([extra])  # one more while connected: the feed reports its capture start
        assert await db_pool.fetchval("SELECT count(*) FROM live_coverage WHERE open") == 21
        await service.unsubscribe([extra])  # and its end
        assert await db_pool.fetchval("SELECT count(*) FROM live_coverage WHERE open") == 20
        assert (
            await db_pool.fetchval(
                "SELECT count(*) FROM live_coverage WHERE instrument_id = $1 AND NOT open", extra
            )
            == 1
        )
        await asyncio.sleep(1.2)  # housekeeping publishes the status to Redis once a second
        published = await read_status(settings)
        assert published["broker"] == "sim" and published["written"] > 0 and published["redis_down"] is False
        assert (published["lost"], published["dead_lettered"]) == (0, 0)
        # what the server keeps on disk is said, as the server's own settings say it
        config = {
            str(k, "ascii") if isinstance(k, bytes) else k: str(v, "ascii") if isinstance(v, bytes) else v
            for k, v in (await redis.config_get("appendonly", "save")).items()
        }
        expected = (
            "aof" if config["appendonly"] == "yes" else "snapshots" if config["save"].strip() else "none"
        )
        assert published["redis_persistence"] == expected
        # a service that dies stops refreshing it: its last status expires instead of lingering
        assert 0 < await redis.ttl(keys.STATUS) <= keys.STATUS_TTL_S
    finally:
        await service.stop()
        await redis.delete(stream)
        await redis.aclose()
    assert await db_pool.fetchval("SELECT count(*) FROM live_coverage WHERE open") == 0
    rows, candle_ticks = await db_pool.fetchrow(
        "SELECT (SELECT count(*) FROM tick_data), (SELECT sum(tick_count) FROM candles_1m)"
    )
    assert rows == candle_ticks == service.writer.stats.written


async def test_flush_interval_is_the_writers_longest_wait(db_pool: asyncpg.Pool, redis_url: str) -> None:
    settings = Settings(
        REDIS_URL=redis_url,
        BROKER="sim",
        TICK_STREAM=f"th:svc:{uuid.uuid4().hex[:8]}",
        FLUSH_INTERVAL_SECONDS=0.2,
    )
    redis = aioredis.Redis.from_url(redis_url)
    try:
        service = IngestService(settings, db_pool, redis, SimBroker(settings))
        assert service.writer.block_ms == 200  # XREADGROUP BLOCK, in the writer's unit
    finally:
        await redis.aclose()
