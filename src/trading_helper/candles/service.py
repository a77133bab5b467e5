"""The candle service: validate a request, resolve the instrument, backfill its gaps, read.

One method, :meth:`CandleService.get_candles`, for everything that wants a continuous series: by
default the candles as :class:`~trading_helper.models.Candle`; both candle routes of the API (GET
with query parameters, POST with the specification's body) pass ``read=read_candles_json`` and
get the same series as the wire JSON the database built.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Generic, TypeVar, overload

import asyncpg

from trading_helper import clock
from trading_helper.brokers.base import Broker
from trading_helper.candles.backfill import Backfiller, BackfillReport
from trading_helper.candles.calendar import SessionLoader, years_between
from trading_helper.candles.read import Reader, read_candles
from trading_helper.errors import InvalidRange
from trading_helper.models import Candle, Instrument
from trading_helper.storage import sql_candles
from trading_helper.storage.db import Connection
from trading_helper.storage.instruments import resolve_instrument
from trading_helper.timeframes import IST, Timeframe, parse_timeframe

T = TypeVar("T")

#: the longest range one request may ask for, per timeframe (``Timeframe.facts.max_span``)
MAX_SPAN: Mapping[Timeframe, timedelta] = MappingProxyType({tf: tf.facts.max_span for tf in Timeframe})
EARLIEST = datetime(1995, 1, 1, tzinfo=IST)
LATEST = datetime(2100, 1, 1, tzinfo=IST)


def as_ist(ts: datetime) -> datetime:
    """Aware times are kept; naive ones are read as IST (the market's clock)."""
    return ts.replace(tzinfo=IST) if ts.tzinfo is None or ts.utcoffset() is None else ts


def validate_range(timeframe: Timeframe, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    start, end = as_ist(start), as_ist(end)
    if not (EARLIEST <= start <= LATEST and EARLIEST <= end <= LATEST):
        raise InvalidRange(f"from and to must lie between {EARLIEST.date()} and {LATEST.date()}")
    if start >= end:
        raise InvalidRange(f"from ({start.isoformat()}) must be before to ({end.isoformat()})")
    span = timeframe.facts.max_span
    if end - start > span:
        raise InvalidRange(
            f"a {timeframe.value} request may span at most {span.days} days; "
            f"this one spans {(end - start).days} days"
        )
    return start, end


@dataclass(slots=True)
class CandleSeries(Generic[T]):
    """One instrument's series: ``candles`` as the reader gave them (a list of
    :class:`~trading_helper.models.Candle`, or the wire JSON text)."""

    instrument: Instrument
    timeframe: Timeframe
    candles: T
    backfill: BackfillReport = field(default_factory=BackfillReport)


#: how long a resolved instrument reference is remembered (a chart asks for the same one often)
RESOLVE_TTL_S = 60.0
_RESOLVE_CACHE_MAX = 10_000


class CandleService:
    """One per process: holds the backfill locks, the loaded calendar years and recently resolved
    instrument references. ``read_pool`` (READ_DATABASE_URL): a replica for the reads; the
    calendar, the backfill and the read that follows a backfill use ``pool``, the primary (a
    replica may not have the candles just stored yet)."""

    def __init__(
        self, pool: asyncpg.Pool, broker: Broker | None, *, read_pool: asyncpg.Pool | None = None
    ) -> None:
        self.pool = pool
        self.reader = read_pool if read_pool is not None else pool
        self.broker = broker
        self.sessions = SessionLoader()
        self.backfiller = Backfiller(pool, broker) if broker is not None else None
        self._calendars: dict[int, str] = {}
        self._resolved: dict[str, tuple[float, Instrument]] = {}

    async def resolve(self, ref: str | int) -> Instrument:
        """A reference (``instruments/refs.py``) -> the instrument (remembered for a minute)."""
        key = str(ref).strip()
        hit = self._resolved.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < RESOLVE_TTL_S:
            return hit[1]
        async with self.reader.acquire() as conn:
            inst = await resolve_instrument(conn, key, self.broker.name if self.broker else None)
        if len(self._resolved) >= _RESOLVE_CACHE_MAX:
            self._resolved.clear()
        self._resolved[key] = (now, inst)
        return inst

    def forget_instruments(self) -> None:
        """After an instrument sync: resolve afresh."""
        self._resolved.clear()

    async def _calendar_of(self, instrument_id: int) -> str:
        key = self._calendars.get(instrument_id)
        if key is None:
            key = await self.reader.fetchval(sql_candles.INSTRUMENT_CALENDAR, instrument_id)
            self._calendars[instrument_id] = key
        return key

    async def _prepare(
        self, ref: str | int, timeframe: str | Timeframe, start: datetime, end: datetime
    ) -> tuple[Instrument, Timeframe, datetime, datetime]:
        tf = parse_timeframe(timeframe)
        start, end = validate_range(tf, start, end)
        instrument = await self.resolve(ref)
        assert instrument.id is not None
        await self.sessions.ensure(
            self.pool, await self._calendar_of(instrument.id), years_between(start, min(end, clock.now()))
        )
        return instrument, tf, start, end

    async def _filled_read(
        self,
        instrument: Instrument,
        tf: Timeframe,
        start: datetime,
        end: datetime,
        read: Callable[[Connection], Awaitable[T]],
    ) -> tuple[T, BackfillReport]:
        """``read`` after the gaps of the range were fetched from the broker."""
        assert instrument.id is not None
        iid = instrument.id

        async def run_read(pool: asyncpg.Pool = self.reader) -> T:
            async with pool.acquire() as conn:
                return await read(conn)

        token = instrument.broker_ids.get(self.broker.name) if self.broker is not None else None
        if self.backfiller is None or token is None:
            return await run_read(), BackfillReport()
        # the gap check, then the read on the same connection: in the common case (nothing
        # missing) the read stands. Side by side, a read could start before another request's
        # backfill committed and the check after it: no gap, and a series with the gap in it
        # (20 identical requests, one of them short, in a CI run)
        async with self.reader.acquire() as conn:
            if not await self.backfiller.has_gaps(conn, iid, tf, start, end):
                return await read(conn), BackfillReport()
        report = await self.backfiller.fill(iid, token, tf, start, end)
        return await run_read(self.pool), report

    @overload
    async def get_candles(
        self,
        ref: str | int,
        timeframe: str | Timeframe,
        start: datetime,
        end: datetime,
    ) -> CandleSeries[list[Candle]]: ...

    @overload
    async def get_candles(
        self,
        ref: str | int,
        timeframe: str | Timeframe,
        start: datetime,
        end: datetime,
        *,
        read: Reader[T],
    ) -> CandleSeries[T]: ...

    async def get_candles(
        self,
        ref: str | int,
        timeframe: str | Timeframe,
        start: datetime,
        end: datetime,
        *,
        read: Reader[Any] = read_candles,
    ) -> CandleSeries[Any]:
        """The merged series, gaps fetched from the broker first, read by ``read``."""
        instrument, tf, start, end = await self._prepare(ref, timeframe, start, end)
        iid = instrument.id or 0
        candles, report = await self._filled_read(
            instrument, tf, start, end, lambda conn: read(conn, iid, tf, start, end)
        )
        return CandleSeries(instrument, tf, candles, report)
