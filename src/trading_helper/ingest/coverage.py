"""Live coverage: which time ranges were captured, per instrument (``live_coverage``).

A connection opens a range for its instruments; while it stays up the range is extended every
few seconds (up to what is safe in Redis, less :data:`LATE_TICK_GRACE`); a drop, a stall, a
login failure or a stop closes it at the time the feed reported (its last sign of life), or
earlier where the receiver has less in Redis (the latest exchange time it holds there, for a
process that reads its socket late), less :data:`LATE_TICK_GRACE` too: a trade stamped in those
last seconds may never be sent on that socket, or still wait in it. A crash leaves the range ending at its last extension. The gaps between ranges are what
the candle service backfills from broker history (brokers do not replay missed ticks).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

import asyncpg

from trading_helper.brokers.base import FeedEvent, FeedState
from trading_helper.errors import StorageError, should_retry
from trading_helper.storage import sql_coverage
from trading_helper.storage.db import db_errors

log = logging.getLogger(__name__)

#: ticks reach us up to about 3 s after their exchange time (NOTES: 177k ticks, max 2.98 s): an
#: extension claims capture only up to that long before what is safe in Redis, so a tick still on
#: its way when the process dies falls in a hole (backfilled), not in a range called captured; a
#: range closed when its socket ends stops that long before the end, for the same reason (the soak
#: found trades stamped just before a reconnect at hh:00:00, due on the socket after it, never
#: sent, in buckets that no history request covered)
LATE_TICK_GRACE = timedelta(seconds=3)


class CoverageRecorder:
    def __init__(
        self, pool: asyncpg.Pool, broker: str, *, scope: Callable[[], Collection[int]] | None = None
    ) -> None:
        self.pool = pool
        self.broker = broker
        #: the instruments this recorder owns (a collector's shard); None: all of the broker's
        self.scope = scope
        self._pending: deque[tuple[str, tuple[object, ...]]] = deque()
        self._lock = asyncio.Lock()  # events and extensions come from different tasks

    async def start(self) -> None:
        """Close ranges a previous process left open: they end at its last extension."""
        if self.scope is None:
            await self._run(sql_coverage.CLOSE_STALE, (self.broker,))
        else:
            await self._run(sql_coverage.CLOSE_STALE_OF, (self.broker, sorted(self.scope())))

    async def on_event(self, event: FeedEvent, *, safe_until: datetime | None = None) -> None:
        """Open or close the ranges of the event's instruments. A range closes at the event's time
        or ``safe_until`` (the receiver's: up to there every tick received is in Redis), whichever
        is earlier, less :data:`LATE_TICK_GRACE`."""
        ids = sorted(event.instrument_ids)
        if not ids:
            return
        # capture ended (for a range a CONNECTED finds still open: at the latest now)
        ended = (event.at if safe_until is None else min(event.at, safe_until)) - LATE_TICK_GRACE
        if event.state == FeedState.CONNECTED:
            await self._run(sql_coverage.CLOSE, (self.broker, ids, ended))
            await self._run(sql_coverage.OPEN, (self.broker, ids, event.at))
        elif event.state in (FeedState.DISCONNECTED, FeedState.LOGIN_REQUIRED, FeedState.STOPPED):
            await self._run(sql_coverage.CLOSE, (self.broker, ids, ended))

    async def extend(self, now: datetime) -> None:
        if self.scope is None:
            await self._run(sql_coverage.EXTEND, (self.broker, now))
        else:
            await self._run(sql_coverage.EXTEND_OF, (self.broker, sorted(self.scope()), now))

    async def _run(self, sql: str, args: tuple[object, ...]) -> None:
        async with self._lock:
            await self._drain(sql, args)

    async def _drain(self, sql: str, args: tuple[object, ...]) -> None:
        self._pending.append((sql, args))
        try:
            with db_errors("live coverage update"):
                async with self.pool.acquire() as conn:
                    while self._pending:
                        q, a = self._pending[0]
                        await conn.execute(q, *a)
                        self._pending.popleft()
        except StorageError as exc:
            if should_retry(exc):
                # the database is away or busy: kept in order and retried with the next event or extension
                log.warning("live coverage update deferred (%d pending): %s", len(self._pending), exc)
            else:
                # refused for good: retrying would block every later update behind it
                log.error("live coverage update dropped: %s", exc)
                self._pending.popleft()
