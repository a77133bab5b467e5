"""The ingest service: one broker feed, the receiver, the database writer, the live-coverage
extension, the housekeeping (held frames, quotes, status) and the maintenance (candle rollup,
retention, job health), run as supervised tasks of one process (:mod:`trading_helper.supervisor`).

It implements the API's ``IngestControl`` (subscribe / unsubscribe / status). Subscriptions are
persisted by the API in ``subscriptions`` and re-subscribed here on every start; changes made by
any API replica while it runs reach it by NOTIFY (``ingest/subscriptions.py``, task ``subscriptions``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from trading_helper import clock
from trading_helper.brokers.base import Broker, FeedState
from trading_helper.config import Settings
from trading_helper.errors import (
    BufferUnavailable,
    ConfigError,
    DatabaseBusy,
    DatabaseUnavailable,
    TradingHelperError,
)
from trading_helper.ingest import keys
from trading_helper.ingest.coverage import LATE_TICK_GRACE, CoverageRecorder
from trading_helper.ingest.receiver import TickReceiver
from trading_helper.ingest.redisconn import redis_errors
from trading_helper.ingest.status import encode_status
from trading_helper.ingest.subscriptions import SubscriptionListener
from trading_helper.ingest.writer import StreamWriter
from trading_helper.storage import sql_instruments
from trading_helper.storage.db import db_errors
from trading_helper.storage.maintenance import Maintenance
from trading_helper.storage.migrate import current_flavour
from trading_helper.supervisor import Supervisor, describe

log = logging.getLogger(__name__)

COVERAGE_EXTEND_S = 5.0


#: the start work's database errors (mapped by db_errors) that it is retried on: away or busy for now
_DB_DOWN = (DatabaseUnavailable, DatabaseBusy)
START_RETRY_MAX_S = 5.0


class IngestService:
    """The tasks run under a :class:`~trading_helper.supervisor.Supervisor` (the process's, when
    given): ``writer`` from the start, then, once the start work has read the flavour and the
    subscriptions, ``feed``, ``coverage`` and ``housekeeping``. With the database down at start,
    the start work (task ``start``) is retried in the background while the API serves."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        broker: Broker,
        *,
        consumer: str = "writer",
        supervisor: Supervisor | None = None,
        listen_dsn: str | None = None,
    ) -> None:
        """``listen_dsn``: PostgreSQL itself, for the LISTEN of subscription changes made by other
        processes (``serve`` gives DIRECT_DATABASE_URL); None: no such task."""
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.broker = broker
        self.feed = broker.live_feed()
        self.coverage = CoverageRecorder(pool, broker.name)
        self.receiver = TickReceiver(
            redis,
            stream=settings.TICK_STREAM,
            max_entries=settings.STREAM_MAX_ENTRIES,
            local_max_frames=settings.LOCAL_QUEUE_MAX_FRAMES,
            coverage=self.coverage,
        )
        self.writer = StreamWriter(
            redis,
            pool,
            stream=settings.TICK_STREAM,
            consumer=consumer,
            max_ticks_per_batch=settings.TICK_BUFFER_SIZE,
            block_ms=settings.flush_interval_ms,
        )
        self.listener = (
            SubscriptionListener(listen_dsn, pool, self, lambda: set(self.feed.subscriptions.values()))
            if listen_dsn is not None
            else None
        )
        self.tasks = supervisor if supervisor is not None else Supervisor()
        self._names: list[str] = []
        self.flavour: str | None = None
        self.started_at: datetime | None = None
        #: candle rollup and retention, job health, catch-up and fallback (storage/maintenance.py)
        self.maintenance: Maintenance | None = None
        #: why the start work could not reach the database (None once it did)
        self._start_db_error: str | None = None

    @property
    def last_refresh_at(self) -> datetime | None:
        return self.maintenance.last_refresh_at if self.maintenance else None

    def _supervise(self, name: str, job: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        self.tasks.start(name, job, **kwargs)
        self._names.append(name)

    async def start(self) -> None:
        """Run the start work, then start the writer. With the database up this returns once the
        feed runs; with it down, at once: the start work is retried in the background."""
        self.started_at = clock.now()
        try:
            await self._start_work()
        except _DB_DOWN as exc:
            self._start_db_error = describe(exc)
            log.error(
                "database unavailable at start (%s): ticks wait in Redis; the start work is retried "
                "in the background",
                self._start_db_error,
            )
            self._supervise(
                "start",
                self._retry_start_work,
                oneshot=True,
                backoff_max_s=START_RETRY_MAX_S,
                expected=_DB_DOWN,
            )
        # after the first try, so a database without the schema is one clear error, not also a
        # writer dying on it; with the database down, the writer waits for it (ticks stay in Redis)
        self._supervise("writer", self.writer.run)

    async def _retry_start_work(self) -> None:
        try:
            await self._start_work()
        except _DB_DOWN as exc:
            self._start_db_error = describe(exc)
            raise

    async def _start_work(self) -> None:
        """Read the flavour and the subscriptions, close stale coverage, then start the feed."""
        with db_errors("ingest start"):
            async with self.pool.acquire() as conn:
                try:
                    self.flavour = await current_flavour(conn)
                except asyncpg.UndefinedTableError as exc:
                    raise ConfigError(
                        "the database has no Trading Helper schema: run `trading-helper db migrate` first"
                    ) from exc
                rows = await conn.fetch(sql_instruments.SUBSCRIBED_TOKENS, self.broker.name)
        self._start_db_error = None
        from trading_helper.export.archive import FoArchive  # pyarrow loads after the start

        archive = FoArchive(self.settings, self.pool)
        self.maintenance = Maintenance(
            self.settings, self.pool, self.flavour, hourly=(("fo_archive", archive.run),)
        )
        await self.coverage.start()
        if rows:
            await self.feed.subscribe({r["broker_token"]: r["instrument_id"] for r in rows})
        self._supervise("feed", self._run_feed)
        self._supervise("coverage", self._extend_coverage)
        self._supervise("housekeeping", self._housekeeping)
        self._supervise("maintenance", self.maintenance.run)
        if self.listener is not None:
            # changes made through any API replica (serve --no-ingest), NOTIFYed by its transaction
            self._supervise("subscriptions", self.listener.run, expected=_DB_DOWN)
        log.info(
            "ingest started: broker=%s, %d subscriptions, %s flavour",
            self.broker.name,
            len(rows),
            self.flavour,
        )

    async def stop(self, timeout_s: float = 6.0) -> None:
        """Stop the feed (its last events close the live coverage), let the writer commit what was
        received, then stop the rest, all within ``timeout_s``: a task that ignores its
        cancellation is abandoned (a later start closes the coverage it left open)."""
        if not self._names:
            return
        deadline = time.monotonic() + timeout_s
        # first what competes with the feed's last coverage update for the lock and the pool
        await self.tasks.stop(["start", "coverage", "maintenance"], timeout_s=timeout_s * 0.2)
        await self.tasks.stop(["feed"], timeout_s=max(0.5, deadline - time.monotonic() - timeout_s * 0.4))
        drain_until = deadline - timeout_s * 0.25
        # the feed's last frames may still wait in the receiver's outbox (they go out in groups)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.receiver.flush(), max(0.1, drain_until - time.monotonic()))
        last = self.receiver.last_id
        while last is not None and not self.writer.committed_through(last) and time.monotonic() < drain_until:
            if self.writer.stats.db_down_since is not None or any(
                t.name == "writer" for t in self.tasks.down()
            ):
                break  # the database is away, or the writer keeps dying: the rest waits in Redis
            await asyncio.sleep(0.02)
        await self.tasks.stop(self._names, timeout_s=max(0.5, deadline - time.monotonic()))
        self._names = []

    async def _run_feed(self) -> None:
        """The broker feed. It returns only on LOGIN_REQUIRED: the task then stays up, reporting
        that state, rather than being restarted against a token the broker refuses; the broker's
        connection lifecycle is what waits for a new login."""
        await self.feed.run(self.receiver)
        if self.feed.state == FeedState.LOGIN_REQUIRED:
            log.error(
                "broker %s needs a login: run `trading-helper login %s`", self.broker.name, self.broker.name
            )
            await asyncio.Event().wait()

    async def _extend_coverage(self) -> None:
        """While the feed is connected, the open coverage ranges reach up to what is safe in Redis
        (the receiver's ``durable_at``), less the time a tick can still be on its way: a process
        killed now (or frames held in memory while Redis is away) leaves a hole that is backfilled,
        never a "captured" range with ticks missing."""
        while True:
            durable = self.receiver.durable_at
            if self.feed.state == FeedState.CONNECTED and durable is not None:
                await self.coverage.extend(min(clock.now(), durable) - LATE_TICK_GRACE)
            await asyncio.sleep(COVERAGE_EXTEND_S)

    async def _housekeeping(self) -> None:
        """Frames held while Redis was away and pending quotes are sent; the status is published."""
        while True:
            try:
                with db_errors("housekeeping"):
                    await self.receiver.flush()
                    await self._publish_status()
            except TradingHelperError as exc:
                log.warning("housekeeping deferred: %s", describe(exc))
            await asyncio.sleep(1.0)

    async def _publish_status(self) -> None:
        """The status hash for API processes without an ingest service; it expires, so the last
        words of a service that died are never shown as current."""
        try:
            with redis_errors("publishing the ingest status"):
                pipe = self.redis.pipeline(transaction=True)
                pipe.delete(keys.STATUS)
                # built under redis-py's field and value types: Mapping's key type is invariant,
                # so the dict[str, str] of encode_status does not pass as its mapping unchanged
                fields: dict[FieldT, EncodableT] = dict(encode_status(self.status()).items())
                pipe.hset(keys.STATUS, mapping=fields)
                pipe.expire(keys.STATUS, keys.STATUS_TTL_S)
                await pipe.execute()
        except BufferUnavailable:
            pass  # the receiver already reports Redis being away

    # -- IngestControl ----------------------------------------------------------------------
    async def subscribe(self, instrument_ids: Sequence[int]) -> None:
        """Hand new instruments to the feed. The feed itself reports when their capture starts
        (a CONNECTED event once they are subscribed on a live connection), which opens their
        coverage and resets their volume baseline."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(sql_instruments.TOKENS_OF, self.broker.name, list(instrument_ids))
        tokens = {r["broker_token"]: r["instrument_id"] for r in rows}
        new = {t: i for t, i in tokens.items() if t not in self.feed.subscriptions}
        if new:
            await self.feed.subscribe(new)

    async def unsubscribe(self, instrument_ids: Sequence[int]) -> None:
        """The feed reports the end of their capture (a STOPPED event), which closes their coverage."""
        wanted = set(instrument_ids)
        tokens = [t for t, i in self.feed.subscriptions.items() if i in wanted]
        if tokens:
            await self.feed.unsubscribe(tokens)

    def task_errors(self) -> dict[str, str]:
        """The last error of each of this service's tasks that ended or died (they should run
        until stopped)."""
        return {
            name: info.last_error or ""
            for name, info in self.tasks.tasks.items()
            if name in self._names and info.last_error is not None
        }

    def status(self) -> dict[str, Any]:
        return {
            "broker": self.broker.name,
            "feed_state": str(self.feed.state),
            "subscriptions": len(self.feed.subscriptions),
            "received": self.receiver.received,
            "written": self.writer.stats.written,
            "rejected": dict(self.receiver.rejected + self.writer.stats.rejected),
            "local_queue_frames": len(self.receiver.local),
            "redis_down": self.receiver.redis_down_since is not None,
            "db_down": self.writer.stats.db_down_since is not None or self._start_db_error is not None,
            "db_busy": self.writer.stats.db_busy_since is not None,
            "dead_lettered": self.writer.stats.dead_lettered,
            "lost": self.writer.stats.lost,
            "redis_persistence": self.writer.durability.persistence if self.writer.durability else None,
            "tasks_down": sorted(t.name for t in self.tasks.down() if t.name in self._names),
            "last_commit_at": self.writer.stats.last_commit_at.isoformat()
            if self.writer.stats.last_commit_at
            else None,
            "last_candle_refresh_at": self.last_refresh_at.isoformat() if self.last_refresh_at else None,
            "jobs": self.maintenance.status() if self.maintenance else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
        }
