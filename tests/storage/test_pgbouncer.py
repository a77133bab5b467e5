"""The application behind a real pgBouncer in transaction pooling (Debian's ``pgbouncer``).

pgBouncer gives each transaction whichever server connection is free, so a client's session state
(a SET, a session advisory lock, a LISTEN, a named prepared statement) ends up on a connection other
clients get next, or is missing on the next transaction. First what pgBouncer does to a client that
is not prepared for it (the controls: a startup ``statement_timeout`` refused, cached prepared
statements colliding), then our pools with ``PGBOUNCER=true``, the API (backfill lock, NOTIFY,
export's SET LOCAL) and the ingest service (COPY, offsets) through it: every answer right, no
setting left behind on a server connection.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.api.conftest import API_TOKEN, authorised, ingest_redis_url
from tests.e2e.helpers import eventually
from tests.fakes.kite_server import DEFAULT_INSTRUMENTS, FakeKiteServer
from tests.storage.helpers import reset_market_data
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.bench.pgbouncer import running_pgbouncer
from trading_helper.brokers.kite.broker import KiteBroker
from trading_helper.brokers.sim import SimBroker
from trading_helper.brokers.tokens import save_token
from trading_helper.config import Settings
from trading_helper.errors import ConfigError
from trading_helper.ingest.service import IngestService
from trading_helper.storage.db import create_pool
from trading_helper.storage.instruments import lookup_tokens, sync_instruments
from trading_helper.supervisor import Supervisor

#: server connections pgBouncer opens per database and user: fewer than the clients, so
#: transactions of different clients share them (what exposes session state)
SERVER_POOL = 2


@dataclass
class Bouncer:
    dsn: str  # the module's database through pgBouncer (pool of SERVER_POOL)
    single_dsn: str  # the same through an alias with one server connection


@pytest.fixture(scope="module")
def bouncer(db_dsn: str) -> Iterator[Bouncer]:
    running = running_pgbouncer(db_dsn, pool_size=SERVER_POOL, aliases={"single": 1})
    try:
        dsn = running.__enter__()
    except ConfigError as exc:  # not installed: a failure saying what to install, never a skip
        pytest.fail(str(exc), pytrace=False)
    try:
        parts = urlsplit(dsn)
        yield Bouncer(dsn, urlunsplit((parts.scheme, parts.netloc, "/single", "", "")))
    finally:
        running.__exit__(None, None, None)


async def _renew_server_connections(pool: asyncpg.Pool | asyncpg.Connection, db_dsn: str) -> None:
    """What pgBouncer does now and then (server_lifetime, server_idle_timeout, a failover): the
    server connection behind ``pool`` (the one-connection alias) is replaced by a new one."""
    server_pid = await pool.fetchval("SELECT pg_backend_pid()")
    direct = await asyncpg.connect(db_dsn)
    try:
        assert await direct.fetchval("SELECT pg_terminate_backend($1)", server_pid)
        await eventually(lambda: _gone(direct, server_pid), "the server connection terminated", within_s=5.0)
    finally:
        await direct.close()


async def _gone(direct: asyncpg.Connection, pid: int) -> bool:
    return not await direct.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)


async def test_controls_what_transaction_pooling_does_to_an_unprepared_client(
    bouncer: Bouncer, db_dsn: str
) -> None:
    # a statement_timeout in the startup packet (our pool's setting without PGBOUNCER) is refused
    with pytest.raises(asyncpg.PostgresError, match="unsupported startup parameter"):
        await asyncpg.connect(bouncer.dsn, server_settings={"statement_timeout": "5000"})
    # asyncpg's cache of named prepared statements: the next server connection does not know them
    client = await asyncpg.connect(bouncer.single_dsn)
    try:
        assert await client.fetchval("SELECT $1::integer + 1", 1) == 2
        await _renew_server_connections(client, db_dsn)
        with pytest.raises(asyncpg.PostgresError, match=r"prepared statement .* does not exist"):
            await client.fetchval("SELECT $1::integer + 1", 1)
    finally:
        await client.close()


async def test_our_pool_behind_pgbouncer_answers_right_and_bounds_a_slow_query(
    bouncer: Bouncer, db_dsn: str
) -> None:
    pool = await create_pool(
        bouncer.single_dsn,  # every client on one server connection: the harshest sharing
        min_size=0,
        max_size=6,
        acquire_timeout_s=5.0,
        statement_timeout_s=0.5,
        pgbouncer=True,
    )
    try:
        for _ in range(2):  # on one server connection, then on its replacement
            answers = await asyncio.gather(*(pool.fetchval("SELECT $1::integer * 2", i) for i in range(200)))
            assert answers == [2 * i for i in range(200)]
            await _renew_server_connections(pool, db_dsn)
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await pool.fetchval("SELECT pg_sleep(10)")
        assert time.monotonic() - began < 3.0
        # the client's bound cancelled the query in the server too (pgBouncer forwards the cancel)
        await eventually(lambda: _no_sleeper(pool), "the slow query cancelled on the server", within_s=5.0)
    finally:
        await pool.close()


async def _no_sleeper(pool: asyncpg.Pool) -> bool:
    running = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(10)' AND state = 'active'"
    )
    return bool(running == 0)


async def _server_settings(pool: asyncpg.Pool) -> set[tuple[str, str]]:
    """TimeZone and statement_timeout as every server connection of the pool has them."""

    async def one() -> tuple[str, str]:
        async with pool.acquire() as conn, conn.transaction():
            await asyncio.sleep(0.05)  # hold it: the others get the other server connections
            return (
                await conn.fetchval("SHOW TimeZone"),
                await conn.fetchval("SHOW statement_timeout"),
            )

    return set(await asyncio.gather(*(one() for _ in range(SERVER_POOL * 3))))


async def test_the_api_behind_pgbouncer(
    bouncer: Bouncer, db_dsn: str, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await reset_market_data(db_pool)
    pool = await create_pool(
        bouncer.dsn, min_size=0, max_size=8, acquire_timeout_s=5.0, statement_timeout_s=5.0, pgbouncer=True
    )
    before = await _server_settings(pool)
    listener = await asyncpg.connect(db_dsn)  # LISTEN: a direct connection, never through pgBouncer
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(
        "subscriptions_changed", lambda _c, _p, _ch, payload: heard.put_nowait(payload)
    )
    try:
        async with FakeKiteServer() as kite:
            kite.history_delay_s = 0.3
            settings = kite.settings(tmp_path / "tokens", API_TOKEN=API_TOKEN, PGBOUNCER=True)
            save_token(settings, "kite", kite.access_token)
            broker = KiteBroker(settings)
            app = create_app(Runtime(settings=settings, pool=pool, broker=broker))
            try:
                async with authorised(app) as client:
                    assert (await client.post("/api/instruments/sync")).status_code == 200
                    token = str(DEFAULT_INSTRUMENTS[0]["instrument_token"])
                    iid = (await lookup_tokens(db_pool, "kite", [token]))[token]
                    params = {
                        "instrument": f"id:{iid}",
                        "interval": "1m",
                        "from": "2024-02-06",
                        "to": "2024-02-07",
                    }
                    # the backfill's advisory lock and savepoints, three requests at once
                    answers = await asyncio.gather(
                        *(client.get("/api/candles", params=params) for _ in range(3))
                    )
                    assert [a.status_code for a in answers] == [200] * 3, answers[0].text
                    assert {len(a.json()["candles"]) for a in answers} == {375}
                    assert kite.history_calls[(token, "minute")] == 1

                    subscribed = await client.post(
                        "/api/instruments/subscribe", json={"instruments": [f"id:{iid}"]}
                    )
                    assert subscribed.status_code == 200, subscribed.text
                    async with asyncio.timeout(5):
                        assert await heard.get() == f"[{iid}]"

                    export = await client.get(
                        "/api/export/candles",
                        params={
                            "instrument": f"id:{iid}",
                            "from": "2024-02-06",
                            "to": "2024-02-07",
                            "tz": "utc",
                        },
                    )
                    assert export.status_code == 200, export.text
                    rows = export.text.strip().splitlines()
                    assert len(rows) == 376 and "2024-02-06 03:45:00+00" in rows[1], rows[:2]
            finally:
                await broker.aclose()
        # the export's zone and lifted timeout stayed in its transaction
        assert await _server_settings(pool) == before
    finally:
        await listener.close()
        await pool.close()


async def test_the_ingest_service_behind_pgbouncer(
    bouncer: Bouncer, db_dsn: str, db_pool: asyncpg.Pool, redis_url: str
) -> None:
    await reset_market_data(db_pool)
    stream = f"th:bouncer:{uuid.uuid4().hex[:8]}"
    settings = Settings(
        REDIS_URL=ingest_redis_url(redis_url),
        BROKER="sim",
        SIM_INSTRUMENTS=10,
        TICK_STREAM=stream,
        PGBOUNCER=True,
    )
    broker = SimBroker(settings)
    async with db_pool.acquire() as conn:
        await sync_instruments(conn, "sim", await broker.fetch_instruments())
        await conn.execute("TRUNCATE subscriptions, live_coverage, ingest_offsets")
        await conn.execute(
            "INSERT INTO subscriptions (instrument_id) SELECT instrument_id FROM instrument_broker_ids "
            "WHERE broker = 'sim' LIMIT 5"
        )
    pool = await create_pool(bouncer.dsn, min_size=0, max_size=4, pgbouncer=True)
    redis = aioredis.Redis.from_url(settings.REDIS_URL)
    service = IngestService(
        settings, pool, redis, broker, supervisor=Supervisor(backoff_initial_s=0.2), listen_dsn=db_dsn
    )
    service.receiver.quotes_key = f"{stream}:quotes"
    service.receiver.live_channel = f"{stream}:live"
    try:
        await service.start()
        await eventually(
            lambda: service.writer.stats.written >= 200, "ticks written through pgBouncer", service=service
        )
        await service.stop()
        stored = await db_pool.fetchval("SELECT count(*) FROM tick_data")
        assert stored == service.writer.stats.written and service.writer.stats.lost == 0
        assert await db_pool.fetchval("SELECT count(*) FROM ingest_offsets WHERE stream = $1", stream) == 1
        assert service.task_errors() == {}
    finally:
        await service.stop()
        await redis.delete(stream, f"{stream}:quotes")
        await redis.aclose()
        await broker.aclose()
        await pool.close()
