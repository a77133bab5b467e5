"""Backfill: fetch the gaps of a request from the broker's history and store them.

One fetch per gap, whoever asks: concurrent requests for the same instrument and timeframe (the
browser tabs of one user) wait on one lock in the process, then on a PostgreSQL advisory lock
shared by every process on the database (API replicas), and recompute the gaps after it, so only
the first reaches the broker. That lock is transaction-level (``pg_try_advisory_xact_lock``, safe
under pgBouncer's transaction pooling): the gaps, the broker's answers and the fetched ranges
(``fetch_coverage``, empty answers included) are written in the lock's transaction, and its commit
both publishes them and lets the next one in, which then finds no gap. A range is never marked
fetched without its candles. A waiter polls for the lock (``LOCK_POLL_S``) rather than blocking
in the server, so no statement outlives the API's statement timeout. The lock's transaction holds a
pool connection through the broker calls: at most ``POOL_SHARE`` of the pool's do at once.

The broker's last minutes are not final (a candle asked for seconds after its close comes back
with wrong high/low/close/volume), so nothing ending later than ``now - FINAL_AFTER`` is fetched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from trading_helper import clock
from trading_helper.brokers.base import Broker
from trading_helper.candles.gaps import Gap, fetch_windows, find_gaps
from trading_helper.candles.metrics import BACKFILL_CALLS, BACKFILL_CANDLES, BACKFILL_ERRORS
from trading_helper.errors import BrokerError, BrokerUnavailable
from trading_helper.models import Candle
from trading_helper.storage import sql_candles
from trading_helper.storage.db import Connection
from trading_helper.timeframes import BUCKET_ORIGIN, IST, Timeframe

log = logging.getLogger(__name__)

#: the broker's candles are final this long after their bucket ends
FINAL_AFTER = timedelta(minutes=2)
#: how often a backfill waiting on another process's tries its lock again, and for how long
LOCK_POLL_S = 0.05
LOCK_WAIT_S = 60.0
#: a backfill holds a connection of the pool for its broker calls: at most this share of the
#: pool's connections at once, so a page of uncovered charts never leaves reads without one (the
#: broker's rate limit, Kite's 3 history calls a second, would not let more go faster anyway)
POOL_SHARE = 0.5

#: brokers stamp daily candles at 00:00 IST; our 1d buckets start at 00:15 IST (the shared origin)
_DAY_SHIFT = BUCKET_ORIGIN - BUCKET_ORIGIN.replace(hour=0, minute=0)


@dataclass(slots=True)
class BackfillReport:
    fetched_ranges: int = 0
    broker_calls: int = 0
    candles: int = 0
    error: BrokerError | None = None


@dataclass(slots=True)
class LastBackfill:
    instrument_id: int
    timeframe: str
    start: datetime
    end: datetime
    candles: int
    at: datetime
    error: str | None = None


def broker_window(timeframe: Timeframe, gap: Gap) -> tuple[datetime, datetime]:
    """What to ask the broker for ``gap`` (its own day stamps for 1d)."""
    if timeframe is Timeframe.D1:
        return gap.start - _DAY_SHIFT, gap.end - _DAY_SHIFT
    return gap.start, gap.end


def our_bucket(timeframe: Timeframe, stamp: datetime) -> datetime:
    """The bucket (shared origin) of a broker candle's time stamp."""
    if timeframe is Timeframe.D1:
        return timeframe.bucket_start(stamp.astimezone(IST) + _DAY_SHIFT)
    return timeframe.bucket_start(stamp)


@dataclass(slots=True)
class Backfiller:
    """``pool`` the primary (gaps re-checked and candles stored under the lock). The first,
    unlocked look for gaps (:meth:`has_gaps`) is on the caller's connection, a replica's where
    reads go to one (a lagging one costs a lock, never a fetch)."""

    pool: asyncpg.Pool
    broker: Broker
    final_after: timedelta = FINAL_AFTER
    last: LastBackfill | None = None
    lock_wait_s: float = LOCK_WAIT_S
    _locks: dict[tuple[int, Timeframe], asyncio.Lock] = field(default_factory=dict)
    _slots: asyncio.Semaphore | None = None

    def _connections(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(max(1, int(self.pool.get_max_size() * POOL_SHARE)))
        return self._slots

    async def has_gaps(
        self, conn: Connection, instrument_id: int, timeframe: Timeframe, start: datetime, end: datetime
    ) -> bool:
        """On ``conn``: one of the read pool's, the read of the series follows on it."""
        until = clock.now() - self.final_after
        return bool(await find_gaps(conn, instrument_id, timeframe, start, end, until))

    async def fill(
        self,
        instrument_id: int,
        broker_token: str,
        timeframe: Timeframe,
        start: datetime,
        end: datetime,
    ) -> BackfillReport:
        report = BackfillReport()
        until = clock.now() - self.final_after
        async with self.pool.acquire() as conn:
            if not await find_gaps(conn, instrument_id, timeframe, start, end, until):
                return report  # the common case: no lock, one query
        # one lock per instrument and timeframe, kept (at most a few thousand small objects)
        lock = self._locks.setdefault((instrument_id, timeframe), asyncio.Lock())
        try:
            async with lock, self._connections(), self._single_flight(instrument_id, timeframe) as conn:
                try:
                    # another request (here or in another process) may have filled them meanwhile
                    gaps = await find_gaps(conn, instrument_id, timeframe, start, end, until)
                    for window in fetch_windows(gaps, timeframe):
                        await self._fetch(conn, instrument_id, broker_token, timeframe, window, report)
                except BrokerError as exc:  # what was fetched before it is committed with the lock
                    report.error = exc
        except BrokerError as exc:
            report.error = exc
        if report.error is not None:
            error = report.error
            BACKFILL_ERRORS.labels(error.code).inc()
            log.warning("backfill of instrument %d %s stopped: %s", instrument_id, timeframe.value, error)
            self.last = LastBackfill(
                instrument_id, timeframe.value, start, end, report.candles, clock.now(), error=str(error)
            )
        return report

    @asynccontextmanager
    async def _single_flight(self, instrument_id: int, timeframe: Timeframe) -> AsyncIterator[Connection]:
        """A primary connection in a transaction holding the backfill lock of the pair; waits
        (polling) while another process holds it, at most ``lock_wait_s``."""
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                if await conn.fetchval(sql_candles.TRY_BACKFILL_LOCK, instrument_id, timeframe.value):
                    yield conn
                    return
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    f"another process has been fetching the {timeframe.value} history of instrument "
                    f"{instrument_id} for {self.lock_wait_s:g} s: answered with what is stored"
                )
            await asyncio.sleep(LOCK_POLL_S)

    async def _fetch(
        self,
        conn: Connection,
        instrument_id: int,
        broker_token: str,
        timeframe: Timeframe,
        window: Gap,
        report: BackfillReport,
    ) -> None:
        ask_from, ask_to = broker_window(timeframe, window)
        report.broker_calls += 1
        BACKFILL_CALLS.inc()
        fetched = await self.broker.fetch_history(broker_token, timeframe, ask_from, ask_to)
        candles: dict[datetime, Candle] = {}
        for c in fetched:
            bucket = our_bucket(timeframe, c.bucket)
            if window.start <= bucket < window.end:
                candles[bucket] = c
        await self._store(conn, instrument_id, timeframe, window, candles)
        report.fetched_ranges += 1
        report.candles += len(candles)
        BACKFILL_CANDLES.inc(len(candles))
        self.last = LastBackfill(
            instrument_id, timeframe.value, window.start, window.end, len(candles), clock.now()
        )

    async def _store(
        self,
        conn: Connection,
        instrument_id: int,
        timeframe: Timeframe,
        window: Gap,
        candles: dict[datetime, Candle],
    ) -> None:
        source = self.broker.name
        async with conn.transaction():  # a savepoint in the lock's transaction
            await store_broker_candles(conn, instrument_id, timeframe, candles, source)
            await conn.execute(
                sql_candles.RECORD_FETCH,
                instrument_id,
                timeframe.value,
                window.start,
                window.end,
                len(candles),
                source,
            )

    def status(self) -> dict[str, object] | None:
        if self.last is None:
            return None
        last = self.last
        return {
            "instrument_id": last.instrument_id,
            "timeframe": last.timeframe,
            "from": last.start.astimezone(IST).isoformat(),
            "to": last.end.astimezone(IST).isoformat(),
            "candles": last.candles,
            "at": last.at.astimezone(IST).isoformat(),
            "error": last.error,
        }


async def store_broker_candles(
    conn: Connection, instrument_id: int, timeframe: Timeframe, candles: dict[datetime, Candle], source: str
) -> None:
    """Upsert ``candles`` (by our bucket) into ``broker_candles``."""
    if not candles:
        return
    buckets = sorted(candles)
    rows = [candles[b] for b in buckets]
    await conn.execute(
        sql_candles.STORE_BROKER_CANDLES,
        instrument_id,
        timeframe.value,
        buckets,
        [c.open for c in rows],
        [c.high for c in rows],
        [c.low for c in rows],
        [c.close for c in rows],
        [c.volume for c in rows],
        source,
        [c.open_interest for c in rows],
    )
