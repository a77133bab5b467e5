"""The ingest service: one broker feed, the receiver, the database writer and the housekeeping
(live coverage, candle refresh on plain PostgreSQL, retention), run as tasks of one process.

It implements the API's ``IngestControl`` (subscribe / unsubscribe / status). Subscriptions are
persisted by the API in ``subscriptions`` and re-subscribed here on every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from trading_helper import clock
from trading_helper.brokers.base import Broker, FeedState
from trading_helper.config import Settings
from trading_helper.errors import TradingHelperError
from trading_helper.ingest import keys
from trading_helper.ingest.coverage import CoverageRecorder
from trading_helper.ingest.receiver import TickReceiver
from trading_helper.ingest.status import encode_status
from trading_helper.ingest.writer import StreamWriter
from trading_helper.storage.maintenance import Maintenance
from trading_helper.storage.migrate import current_flavour

log = logging.getLogger(__name__)

_SUBSCRIBED_TOKENS = """
SELECT b.broker_token, s.instrument_id FROM subscriptions s
JOIN instrument_broker_ids b ON b.instrument_id = s.instrument_id AND b.broker = $1
"""
_TOKENS_OF = """
SELECT broker_token, instrument_id FROM instrument_broker_ids WHERE broker = $1 AND instrument_id = ANY($2::integer[])
"""
COVERAGE_EXTEND_S = 5.0


class IngestService:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis, broker: Broker,
                 *, consumer: str = "writer") -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.broker = broker
        self.feed = broker.live_feed()
        self.coverage = CoverageRecorder(pool, broker.name)
        self.receiver = TickReceiver(redis, stream=settings.TICK_STREAM, max_entries=settings.STREAM_MAX_ENTRIES,
                                     local_max_frames=settings.LOCAL_QUEUE_MAX_FRAMES, coverage=self.coverage)
        self.writer = StreamWriter(redis, pool, stream=settings.TICK_STREAM, consumer=consumer,
                                   max_ticks_per_batch=settings.TICK_BUFFER_SIZE)
        self._tasks: list[asyncio.Task[None]] = []
        self.flavour: str | None = None
        self.started_at: datetime | None = None
        #: candle rollup and retention, job health, catch-up and fallback (storage/maintenance.py)
        self.maintenance: Maintenance | None = None

    @property
    def last_refresh_at(self) -> datetime | None:
        return self.maintenance.last_refresh_at if self.maintenance else None

    async def start(self) -> None:
        async with self.pool.acquire() as conn:
            self.flavour = await current_flavour(conn)
            rows = await conn.fetch(_SUBSCRIBED_TOKENS, self.broker.name)
        self.maintenance = Maintenance(self.settings, self.pool, self.flavour)
        await self.coverage.start()
        if rows:
            await self.feed.subscribe({r["broker_token"]: r["instrument_id"] for r in rows})
        self.started_at = clock.now()
        self._tasks = [
            asyncio.create_task(self._run_feed(), name="feed"),
            asyncio.create_task(self.writer.run(), name="writer"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
            asyncio.create_task(self.maintenance.run(), name="maintenance"),
        ]
        log.info("ingest started: broker=%s, %d subscriptions, %s flavour", self.broker.name, len(rows), self.flavour)

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Stop the feed, let the writer commit what was received (bounded wait), then stop."""
        if not self._tasks:
            return
        feed, *others = self._tasks
        await self._cancel(feed)
        last = self.receiver.last_id
        for _ in range(int(drain_timeout_s / 0.02)):
            if last is None or self.writer.committed_through(last):
                break
            await asyncio.sleep(0.02)
        for task in others:
            await self._cancel(task)
        self._tasks = []

    @staticmethod
    async def _cancel(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def _run_feed(self) -> None:
        try:
            await self.feed.run(self.receiver)
        except TradingHelperError as exc:
            log.error("broker feed stopped: %s", exc)
        except Exception:
            log.exception("broker feed crashed")
            raise

    async def _housekeeping(self) -> None:
        last_extend = 0.0
        while True:
            now = time.monotonic()
            try:
                if now - last_extend >= COVERAGE_EXTEND_S and self.feed.state == FeedState.CONNECTED:
                    last_extend = now
                    await self.coverage.extend(clock.now())
                await self.receiver.flush()
                await self._publish_status()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TradingHelperError) as exc:
                log.warning("housekeeping deferred: %s", exc)
            await asyncio.sleep(1.0)

    async def _publish_status(self) -> None:
        try:
            await self.redis.hset(keys.STATUS, mapping=encode_status(self.status()))  # type: ignore[arg-type]
        except (RedisError, OSError):
            pass  # the receiver already reports Redis being away

    # -- IngestControl ----------------------------------------------------------------------
    async def subscribe(self, instrument_ids: Sequence[int]) -> None:
        """Hand new instruments to the feed. The feed itself reports when their capture starts
        (a CONNECTED event once they are subscribed on a live connection), which opens their
        coverage and resets their volume baseline."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_TOKENS_OF, self.broker.name, list(instrument_ids))
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
        """Tasks that ended with an exception (they should run until stopped)."""
        return {t.get_name(): repr(t.exception()) for t in self._tasks
                if t.done() and not t.cancelled() and t.exception() is not None}

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
            "db_down": self.writer.stats.db_down_since is not None,
            "last_commit_at": self.writer.stats.last_commit_at.isoformat() if self.writer.stats.last_commit_at else None,
            "last_candle_refresh_at": self.last_refresh_at.isoformat() if self.last_refresh_at else None,
            "jobs": self.maintenance.status() if self.maintenance else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
        }

