"""The API's own pool: a statement timeout and an acquire timeout answer 503 instead of hanging,
and the writer, on the ingest pool, keeps committing while API reads are stuck."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import redis.asyncio as aioredis

from tests.api.conftest import API_TOKEN, authorised, ingest_redis_url
from tests.e2e.helpers import eventually
from tests.storage.helpers import reset_market_data
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.brokers.sim import SimBroker
from trading_helper.config import Settings
from trading_helper.ingest import keys
from trading_helper.ingest.service import IngestService
from trading_helper.storage.db import create_pool
from trading_helper.storage.instruments import sync_instruments

STATEMENT_TIMEOUT_S = 1.0
ACQUIRE_TIMEOUT_S = 0.5
API_POOL = 4
CANDLES = {"interval": "1m", "from": "2024-03-04T09:15:00", "to": "2024-03-04T15:30:00"}


@asynccontextmanager
async def api_over_own_pool(
    dsn: str, runtime_extra: dict[str, object] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    # connected up front: on a loaded machine, connecting could itself outlast the acquire timeout
    pool = await create_pool(
        dsn,
        min_size=API_POOL,
        max_size=API_POOL,
        acquire_timeout_s=ACQUIRE_TIMEOUT_S,
        statement_timeout_s=STATEMENT_TIMEOUT_S,
    )
    settings = Settings(API_TOKEN=API_TOKEN, BROKER="sim")
    app = create_app(
        Runtime(settings, pool, **(runtime_extra or {})),  # type: ignore[arg-type]
        live_channel=f"th:live:pools:{uuid.uuid4().hex[:8]}",
    )
    try:
        async with authorised(app) as client:
            yield client
    finally:
        await pool.close()


@asynccontextmanager
async def locked(dsn: str, table: str) -> AsyncIterator[None]:
    """``LOCK TABLE`` held by another session (as a migration or a long maintenance would)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


async def sim_instrument_ids(pool: asyncpg.Pool, broker: SimBroker, subscribe: int) -> list[int]:
    async with pool.acquire() as conn:
        await sync_instruments(conn, "sim", await broker.fetch_instruments())
        await conn.execute("TRUNCATE subscriptions, live_coverage")
        rows = await conn.fetch(
            "SELECT instrument_id FROM instrument_broker_ids WHERE broker = 'sim' "
            "ORDER BY instrument_id LIMIT $1",
            subscribe,
        )
        ids = [r[0] for r in rows]
        await conn.execute("INSERT INTO subscriptions (instrument_id) SELECT unnest($1::integer[])", ids)
    return ids


async def test_a_lock_on_tick_data_answers_503_within_the_statement_timeout(
    db_dsn: str, db_pool: asyncpg.Pool
) -> None:
    ids = await sim_instrument_ids(db_pool, SimBroker(Settings(SIM_INSTRUMENTS=3)), 3)
    async with api_over_own_pool(db_dsn) as client:
        assert (
            await client.get("/api/candles", params={"instrument": f"id:{ids[0]}", **CANDLES})
        ).status_code == 200
        async with locked(db_dsn, "tick_data"):
            began = time.monotonic()
            resp = await client.get("/api/candles", params={"instrument": f"id:{ids[0]}", **CANDLES})
            took = time.monotonic() - began
        assert resp.status_code == 503 and resp.json()["code"] == "query_timeout", resp.text
        assert resp.headers["retry-after"] == "5"
        assert STATEMENT_TIMEOUT_S * 0.9 <= took < STATEMENT_TIMEOUT_S + 3.0, took
        assert (
            await client.get("/api/candles", params={"instrument": f"id:{ids[0]}", **CANDLES})
        ).status_code == 200


async def test_twenty_stuck_api_reads_never_hold_back_the_writer(
    db_dsn: str, db_pool: asyncpg.Pool, redis_url: str
) -> None:
    await reset_market_data(db_pool)
    stream = f"th:pools:{uuid.uuid4().hex[:8]}"
    url = ingest_redis_url(redis_url)
    settings = Settings(
        REDIS_URL=url,
        BROKER="sim",
        SIM_INSTRUMENTS=20,
        SIM_TICKS_PER_SECOND=300,
        TICK_STREAM=stream,
        REFRESH_INTERVAL_S=60,
    )
    broker = SimBroker(settings)
    ids = await sim_instrument_ids(db_pool, broker, 20)
    ingest_pool = await create_pool(db_dsn, min_size=0, max_size=settings.INGEST_DB_POOL_SIZE)
    redis = aioredis.Redis.from_url(url)
    service = IngestService(settings, ingest_pool, redis, broker)
    service.receiver.quotes_key = f"{stream}:quotes"
    service.receiver.live_channel = f"{stream}:live"
    await service.start()
    try:
        async with api_over_own_pool(db_dsn, {"redis": redis, "ingest": service}) as client:
            await eventually(lambda: service.writer.stats.written > 0, "ticks written", service=service)
            progress: list[float] = []  # when the writer's count went up during the hold
            # broker history is read by every candle request and never touched by the writer
            async with locked(db_dsn, "broker_candles"):
                began = time.monotonic()

                async def read(iid: int) -> tuple[httpx.Response, float]:
                    resp = await client.get("/api/candles", params={"instrument": f"id:{iid}", **CANDLES})
                    return resp, time.monotonic() - began

                async def watch_writer() -> None:
                    last = service.writer.stats.written
                    while True:
                        await asyncio.sleep(0.02)
                        if service.writer.stats.written > last:
                            last = service.writer.stats.written
                            progress.append(time.monotonic() - began)

                watcher = asyncio.create_task(watch_writer())
                answers = await asyncio.gather(*(read(iid) for iid in ids))
                held_s = time.monotonic() - began
                watcher.cancel()
            codes = sorted({r.json()["code"] for r, _ in answers})
            assert all(r.status_code == 503 for r, _ in answers), [r.text for r, _ in answers]
            # API_POOL requests wait for the lock until the statement timeout, the others for a
            # connection until the acquire timeout: all answered, none after both and a margin
            assert codes == ["database_busy", "query_timeout"], codes
            assert max(t for _, t in answers) < STATEMENT_TIMEOUT_S + ACQUIRE_TIMEOUT_S + 3.0
            # ticks kept committing all along: no stretch of the hold without a commit
            marks = [0.0, *progress, held_s]
            longest = max(b - a for a, b in itertools.pairwise(marks))
            assert len(progress) >= 3 and longest < 1.5, (progress, held_s)
    finally:
        await service.stop()
        await redis.delete(stream, f"{stream}:quotes", keys.STATUS)
        await redis.aclose()
        await broker.aclose()
        await ingest_pool.close()
