"""Builders for end-to-end tests: a real broker adapter against its local fake, feeding the real
ingest service (Redis stream -> COPY into tick_data) on this module's fresh database.

Nothing is mocked. Each test gets its own tick stream and quote/live keys in Redis and removes
them afterwards; the service's shared status hash is removed only while it still holds this
test's status (another process may be using it).
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from tests.storage.helpers import reset_market_data
from trading_helper.brokers.base import Broker
from trading_helper.config import Settings
from trading_helper.ingest import keys
from trading_helper.ingest.service import IngestService
from trading_helper.storage.instruments import lookup_tokens, sync_instruments


def new_stream() -> str:
    return f"th:e2e:{uuid.uuid4().hex[:10]}"


async def reset_database(pool: asyncpg.Pool) -> None:
    """Tests of one module share its database: each starts from no ticks, candles, coverage."""
    await reset_market_data(pool)
    await pool.execute("TRUNCATE subscriptions, live_coverage, fetch_coverage, broker_candles")


async def sync_master(pool: asyncpg.Pool, broker: Broker) -> dict[str, int]:
    """The broker's instrument master into ``instruments``; returns broker token -> our id."""
    items = await broker.fetch_instruments()
    async with pool.acquire() as conn:
        await sync_instruments(conn, broker.name, items)
        return await lookup_tokens(conn, broker.name, [i.broker_ids[broker.name] for i in items])


async def persist_subscriptions(pool: asyncpg.Pool, instrument_ids: list[int]) -> None:
    """What the API stores on a subscribe; the service subscribes these on start."""
    await pool.execute(
        "INSERT INTO subscriptions (instrument_id) SELECT unnest($1::integer[])", instrument_ids
    )


async def trades_stamped_after_capture(since: float, lag_s: int) -> None:
    """Wait until a trade a fake stamps now falls in the second capture started in or later.

    Capture started at or before ``since`` (the time its connect or subscription was seen). The
    fakes stamp a trade with the current whole second minus ``lag_s`` (Kite's ``last_trade_time``
    is a second before its ``exchange_timestamp`` in the fake); a trade stamped in an earlier second
    than capture's is "before capture" (ingest.volume), which after 09:16 IST is no new trade. The
    wait is at most ``lag_s`` seconds."""
    first_ok = int(since) + lag_s  # the first whole second whose trades are stamped >= capture's second
    await asyncio.sleep(max(0.0, first_ok - time.time() + 0.001))


@asynccontextmanager
async def running_service(
    settings: Settings, pool: asyncpg.Pool, broker: Broker
) -> AsyncIterator[IngestService]:
    """The ingest service started (feed, writer, housekeeping), stopped and cleaned up after."""
    redis = aioredis.Redis.from_url(settings.REDIS_URL)
    service = IngestService(settings, pool, redis, broker)
    # the latest-quote hash and the live channel default to process-wide names the API reads:
    # per-test names keep concurrent test runs apart (the stream already is per test)
    service.receiver.quotes_key = f"{settings.TICK_STREAM}:quotes"
    service.receiver.live_channel = f"{settings.TICK_STREAM}:live"
    try:
        await service.start()
        yield service
    finally:
        await service.stop()
        await redis.delete(settings.TICK_STREAM, service.receiver.quotes_key)
        if service.started_at is not None:
            await _delete_status_if_ours(redis, service.started_at.isoformat())
        await redis.aclose()


async def _delete_status_if_ours(redis: aioredis.Redis, started_at: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(keys.STATUS)
            current = await pipe.hget(keys.STATUS, "started_at")
            if current is not None and current.decode() == started_at:
                pipe.multi()
                pipe.delete(keys.STATUS)
                await pipe.execute()
        except WatchError:
            pass  # written by another service meanwhile: it is theirs now


async def eventually(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]],
    what: str,
    within_s: float = 10.0,
    *,
    service: IngestService | None = None,
) -> None:
    """Poll ``check`` (sync or async) until true; fail naming ``what`` (and the service's state)."""
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            state = (
                f"; service status {service.status()}, task errors {service.task_errors()}" if service else ""
            )
            raise AssertionError(f"not within {within_s:g}s: {what}{state}")
        await asyncio.sleep(0.02)


async def written_at_least(pool: asyncpg.Pool, n: int) -> bool:
    return int(await pool.fetchval("SELECT count(*) FROM tick_data")) >= n


@dataclass(frozen=True)
class Coverage:
    lower: datetime
    upper: datetime
    open: bool


async def coverage_of(pool: asyncpg.Pool, instrument_id: int) -> list[Coverage]:
    rows = await pool.fetch(
        "SELECT lower(period) AS lo, upper(period) AS hi, open FROM live_coverage "
        "WHERE instrument_id = $1 ORDER BY lower(period)",
        instrument_id,
    )
    return [Coverage(r["lo"], r["hi"], r["open"]) for r in rows]
