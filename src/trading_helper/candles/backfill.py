"""Backfill: fetch the gaps of a request from the broker's history and store them.

One fetch per gap, whoever asks: concurrent requests for the same instrument and timeframe (the
browser tabs of one user) wait on one lock and recompute the gaps after it, so only the first
reaches the broker. Candles and the fetched range (``fetch_coverage``, empty answers included)
are written in one transaction, so a range is never marked fetched without its candles.

The broker's last minutes are not final (a candle asked for seconds after its close comes back
with wrong high/low/close/volume), so nothing ending later than ``now - FINAL_AFTER`` is fetched.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from trading_helper import clock
from trading_helper.brokers.base import Broker
from trading_helper.candles.gaps import Gap, fetch_windows, find_gaps
from trading_helper.candles.metrics import BACKFILL_CALLS, BACKFILL_CANDLES, BACKFILL_ERRORS
from trading_helper.errors import BrokerError
from trading_helper.models import Candle
from trading_helper.storage import sql_candles
from trading_helper.storage.db import Connection
from trading_helper.timeframes import BUCKET_ORIGIN, IST, Timeframe

log = logging.getLogger(__name__)

#: the broker's candles are final this long after their bucket ends
FINAL_AFTER = timedelta(minutes=2)

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
    pool: asyncpg.Pool
    broker: Broker
    final_after: timedelta = FINAL_AFTER
    last: LastBackfill | None = None
    _locks: dict[tuple[int, Timeframe], asyncio.Lock] = field(default_factory=dict)

    async def has_gaps(
        self, instrument_id: int, timeframe: Timeframe, start: datetime, end: datetime
    ) -> bool:
        async with self.pool.acquire() as conn:
            return bool(
                await find_gaps(conn, instrument_id, timeframe, start, end, clock.now() - self.final_after)
            )

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
            async with lock:
                # another request may have filled them while this one waited
                async with self.pool.acquire() as conn:
                    gaps = await find_gaps(conn, instrument_id, timeframe, start, end, until)
                for window in fetch_windows(gaps, timeframe):
                    await self._fetch(instrument_id, broker_token, timeframe, window, report)
        except BrokerError as exc:
            report.error = exc
            BACKFILL_ERRORS.labels(exc.code).inc()
            log.warning("backfill of instrument %d %s stopped: %s", instrument_id, timeframe.value, exc)
            self.last = LastBackfill(
                instrument_id, timeframe.value, start, end, report.candles, clock.now(), error=str(exc)
            )
        return report

    async def _fetch(
        self,
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
        await self._store(instrument_id, timeframe, window, candles)
        report.fetched_ranges += 1
        report.candles += len(candles)
        BACKFILL_CANDLES.inc(len(candles))
        self.last = LastBackfill(
            instrument_id, timeframe.value, window.start, window.end, len(candles), clock.now()
        )

    async def _store(
        self,
        instrument_id: int,
        timeframe: Timeframe,
        window: Gap,
        candles: dict[datetime, Candle],
    ) -> None:
        source = self.broker.name
        async with self.pool.acquire() as conn, conn.transaction():
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
