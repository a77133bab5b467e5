"""Subscription changes made on another connection (another API replica) reach the running ingest
service's feed by NOTIFY ``subscriptions_changed``: at the commit, never after a rollback; a bad
payload is counted and answered by re-reading the set; a lost listening connection comes back and
applies what changed while it was away."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from tests.api.conftest import ingest_redis_url
from tests.e2e.helpers import eventually
from tests.storage.helpers import reset_market_data
from trading_helper.brokers.sim import SimBroker
from trading_helper.config import Settings
from trading_helper.ingest.service import IngestService
from trading_helper.storage import sql_instruments
from trading_helper.storage.instruments import sync_instruments
from trading_helper.storage.subscriptions import IDS_PER_NOTIFY, notify_changed, parse_changed
from trading_helper.supervisor import Supervisor


@pytest.fixture
async def service(db_dsn: str, db_pool: asyncpg.Pool, redis_url: str) -> AsyncIterator[IngestService]:
    """The simulator's ingest service with nothing subscribed, listening on its own connection."""
    await reset_market_data(db_pool)
    stream = f"th:subs:{uuid.uuid4().hex[:8]}"
    settings = Settings(
        REDIS_URL=ingest_redis_url(redis_url), BROKER="sim", SIM_INSTRUMENTS=10, TICK_STREAM=stream
    )
    broker = SimBroker(settings)
    async with db_pool.acquire() as conn:
        await sync_instruments(conn, "sim", await broker.fetch_instruments())
        await conn.execute("TRUNCATE subscriptions, live_coverage")
    redis = aioredis.Redis.from_url(settings.REDIS_URL)
    service = IngestService(
        settings,
        db_pool,
        redis,
        broker,
        supervisor=Supervisor(backoff_initial_s=0.2, backoff_max_s=1.0),
        listen_dsn=db_dsn,
    )
    service.receiver.quotes_key = f"{stream}:quotes"
    service.receiver.live_channel = f"{stream}:live"
    await service.start()
    try:
        assert service.listener is not None
        await eventually(service.listener.listening.is_set, "the LISTEN in place", service=service)
        yield service
    finally:
        await service.stop()
        await redis.delete(stream, f"{stream}:quotes")
        await redis.aclose()
        await broker.aclose()


def following(service: IngestService) -> set[int]:
    return set(service.feed.subscriptions.values())


async def change(conn: asyncpg.Connection, add: list[int] = [], drop: list[int] = []) -> None:  # noqa: B006
    """What an API replica does: change the table and NOTIFY, in one transaction."""
    async with conn.transaction():
        if add:
            await conn.execute(sql_instruments.SUBSCRIBE, add)
        if drop:
            await conn.execute(sql_instruments.UNSUBSCRIBE, drop)
        await notify_changed(conn, add + drop)


async def test_a_committed_change_reaches_the_feed_and_a_rolled_back_one_does_not(
    service: IngestService, db_dsn: str, db_pool: asyncpg.Pool
) -> None:
    ids = [r["instrument_id"] for r in await db_pool.fetch("SELECT instrument_id FROM instrument_broker_ids")]
    ids.sort()
    other = await asyncpg.connect(db_dsn)  # another process's connection
    try:
        rolled_back = other.transaction()
        await rolled_back.start()
        await other.execute(sql_instruments.SUBSCRIBE, ids[:3])
        await notify_changed(other, ids[:3])
        await rolled_back.rollback()

        await change(other, add=ids[3:5])
        await eventually(lambda: following(service) == set(ids[3:5]), "the commit applied", service=service)
        assert service.listener is not None and service.listener.applied >= 1

        await change(other, add=[ids[6]], drop=[ids[3]])
        await eventually(
            lambda: following(service) == {ids[4], ids[6]}, "a subscribe and an unsubscribe", service=service
        )
        await asyncio.sleep(0.3)  # the rolled-back three never arrive
        assert following(service) == {ids[4], ids[6]}
    finally:
        await other.close()


async def test_a_bad_payload_is_counted_and_the_set_is_read_again(
    service: IngestService, db_dsn: str, db_pool: asyncpg.Pool
) -> None:
    iid = await db_pool.fetchval("SELECT min(instrument_id) FROM instrument_broker_ids")
    # subscribed without a notification (a writer that forgot): the bad payload's re-read finds it
    await db_pool.execute(sql_instruments.SUBSCRIBE, [iid])
    before = REGISTRY.get_sample_value("th_subscription_bad_notifications_total") or 0.0
    await db_pool.execute("SELECT pg_notify('subscriptions_changed', '{\"ids\": \"no list\"}')")
    await eventually(
        lambda: (REGISTRY.get_sample_value("th_subscription_bad_notifications_total") or 0.0) == before + 1,
        "the bad payload counted",
        service=service,
    )
    await eventually(lambda: following(service) == {iid}, "the set re-read", service=service)


async def test_a_lost_listening_connection_comes_back_and_applies_what_changed_meanwhile(
    service: IngestService, db_pool: asyncpg.Pool
) -> None:
    ids = sorted(
        r["instrument_id"] for r in await db_pool.fetch("SELECT instrument_id FROM instrument_broker_ids")
    )
    async with db_pool.acquire() as conn:
        await change(conn, add=ids[:2])
    await eventually(lambda: following(service) == set(ids[:2]), "the first change", service=service)
    killed = await db_pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    assert killed == 1
    # changed while nobody listens: no notification will ever name them
    await db_pool.execute(sql_instruments.UNSUBSCRIBE, [ids[0]])
    await db_pool.execute(sql_instruments.SUBSCRIBE, [ids[5]])
    await eventually(
        lambda: service.tasks.tasks["subscriptions"].restarts >= 1, "the listener restarted", service=service
    )
    await eventually(
        lambda: following(service) == {ids[1], ids[5]}, "the set re-read on reconnection", service=service
    )


def test_payloads_stay_under_postgres_limit_and_parse_strictly() -> None:
    biggest = json.dumps([2**31 - 1] * IDS_PER_NOTIFY)
    assert len(biggest.encode()) < 8000  # PostgreSQL refuses a longer NOTIFY payload
    assert parse_changed("[1, 2, 3]") == [1, 2, 3]
    assert parse_changed("[]") == []
    for bad in ("", "not json", "{}", '["1"]', "[1.5]", "[true]", "null"):
        assert parse_changed(bad) is None, bad


async def test_a_long_change_is_sent_in_payloads_postgres_accepts(db_dsn: str) -> None:
    listener, sender = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    got: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener(
            "subscriptions_changed", lambda _c, _p, _ch, payload: got.put_nowait(payload)
        )
        ids = list(range(2**31 - 1201, 2**31 - 1))  # 1,200 of the longest ids
        async with sender.transaction():
            await notify_changed(sender, ids)
        received: list[int] = []
        while len(received) < len(ids):
            async with asyncio.timeout(5):
                payload = await got.get()
            assert len(payload.encode()) < 8000
            received += parse_changed(payload) or []
        assert received == ids
    finally:
        await listener.close()
        await sender.close()
