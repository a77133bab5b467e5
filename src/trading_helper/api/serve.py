"""``trading-helper serve``: the API (and, by default, the ingest service) in one process.

``serve --no-ingest`` is a stateless API replica: no feed, writer, housekeeping or reconciliation;
any number of them serve behind a load balancer. What they share lives in PostgreSQL and Redis:
subscriptions (a change is NOTIFYed to the ingest service, wherever it runs), the backfill's single
flight (an advisory lock), the live ticks (Redis pub/sub, relayed by each replica's WebSocket hub)
and the ingest status (a Redis hash).

The process owns two pools (the API's, with a statement and an acquire timeout, and the ingest
service's), the Redis client, the one broker instance and the supervisor of its long-lived tasks,
and hands them to ``create_app`` through a :class:`Runtime`. Subscriptions persisted in the
database are re-subscribed by the ingest service when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
import redis.asyncio as aioredis
import uvicorn

from trading_helper import redact
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.brokers.base import Broker
from trading_helper.brokers.registry import build_broker
from trading_helper.config import Settings
from trading_helper.errors import TradingHelperError
from trading_helper.ingest.redisconn import redis_client
from trading_helper.ingest.service import IngestService
from trading_helper.listen import listen_socket
from trading_helper.runner import freeze_startup_heap
from trading_helper.storage.db import create_pool
from trading_helper.supervisor import Supervisor

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 2.0
SERVER_GRACE_S = 2.0


def _reconcile_after_sessions(
    supervisor: Supervisor, pool: asyncpg.Pool, broker: Broker, minutes: int
) -> None:
    """The supervised task ``reconcile`` (``reconcile/schedule.py``)."""
    from datetime import timedelta

    from trading_helper.reconcile.schedule import reconcile_after_sessions

    supervisor.start(
        "reconcile",
        lambda: reconcile_after_sessions(pool, broker, timedelta(minutes=minutes)),
        backoff_max_s=600.0,
        expected=(TradingHelperError,),
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the process's (:mod:`trading_helper.runner`) stop
    everything in order, the server included, and in bounded time."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _bounded(
    what: str, close: Callable[[], Awaitable[object]], timeout_s: float = CLOSE_TIMEOUT_S
) -> None:
    try:
        await asyncio.wait_for(close(), timeout_s)
    except TimeoutError:
        log.warning("%s did not close within %.0f s: left behind", what, timeout_s)
    except Exception as exc:  # closing is best effort: the rest must still close
        log.warning("closing %s failed: %s", what, exc)


async def _close_pool(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
    except (TimeoutError, Exception):
        pool.terminate()  # connections still busy (a stuck query): closed without waiting


async def _api_pool(settings: Settings, dsn: str) -> asyncpg.Pool:
    """A pool of the API (on the primary or the read replica), bounded in its waits."""
    return await create_pool(
        dsn,
        min_size=0,
        max_size=settings.API_DB_POOL_SIZE,
        acquire_timeout_s=settings.API_ACQUIRE_TIMEOUT_S,
        statement_timeout_s=settings.API_STATEMENT_TIMEOUT_S,
        pgbouncer=settings.PGBOUNCER,
    )


async def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    ingest: bool = True,
    redis: aioredis.Redis | None = None,
    on_ready: Callable[[], None] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve until cancelled. ``redis``: a client to use instead of ``REDIS_URL`` (the demo's
    in-process stand-in); ``on_ready``: called once the ingest service runs, before serving;
    ``sock``: a listening socket bound already (the demo binds first).

    The database may be down: the pools connect on first use, the API answers 503 where it needs
    the database, and the ingest service retries its start work in the background while ticks
    wait in Redis. Stopping is bounded at every step."""
    sock = sock if sock is not None else listen_socket(host or settings.API_HOST, port or settings.API_PORT)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(sock.close)
        api_pool = await _api_pool(settings, settings.DATABASE_URL)
        stack.push_async_callback(_close_pool, api_pool)
        read_pool = None
        if settings.READ_DATABASE_URL:
            read_pool = await _api_pool(settings, settings.READ_DATABASE_URL)
            stack.push_async_callback(_close_pool, read_pool)
        if redis is None:
            redis = redis_client(settings.REDIS_URL)  # reads and connects bounded in time
        stack.push_async_callback(_bounded, "the Redis client", redis.aclose)
        broker = build_broker(settings)
        stack.push_async_callback(_bounded, "the broker", broker.aclose)
        supervisor = Supervisor()
        service: IngestService | None = None
        if ingest:
            ingest_pool = await create_pool(
                settings.DATABASE_URL,
                min_size=0,
                max_size=settings.INGEST_DB_POOL_SIZE,
                pgbouncer=settings.PGBOUNCER,
            )
            stack.push_async_callback(_close_pool, ingest_pool)
            service = IngestService(
                settings,
                ingest_pool,
                redis,
                broker,
                supervisor=supervisor,
                listen_dsn=settings.direct_database_url,
            )
            stack.push_async_callback(service.stop)
            if settings.RECONCILE_AFTER_MINUTES:
                _reconcile_after_sessions(supervisor, api_pool, broker, settings.RECONCILE_AFTER_MINUTES)
                stack.push_async_callback(supervisor.stop, ["reconcile"])
        app = create_app(Runtime(settings, api_pool, redis, broker, service, supervisor, read_pool=read_pool))
        if service is not None:
            await service.start()
        config = uvicorn.Config(
            app,
            host=host or settings.API_HOST,
            port=port or settings.API_PORT,
            log_level=settings.LOG_LEVEL.lower(),
            lifespan="on",
            timeout_graceful_shutdown=int(SERVER_GRACE_S),
        )
        # after Config, which sets uvicorn's logging up: secrets (the WebSocket's ?token= too) and
        # text from outside never reach a log line as they are
        redact.install()
        bound = sock.getsockname()
        log.info("serving on http://%s:%d (docs at /docs)", bound[0], bound[1])
        if on_ready is not None:
            on_ready()
        freeze_startup_heap()  # what is loaded by now stays: the collector need not walk it again
        server = _Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="http")
        try:
            await asyncio.shield(serving)
        finally:
            if not serving.done():  # cancelled (a signal): let uvicorn close its connections, briefly
                server.should_exit = True
                _, pending = await asyncio.wait({serving}, timeout=SERVER_GRACE_S + 1)
                if pending:
                    serving.cancel()
                    await asyncio.wait({serving}, timeout=1.0)
