"""The candle service: validate a request, resolve the instrument, backfill its gaps, read.

Both candle routes of the API (GET with query parameters, POST with the specification's body)
call :meth:`CandleService.get_candles`; so can anything else that wants a continuous series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from trading_helper.brokers.base import Broker
from trading_helper.candles.backfill import Backfiller, BackfillReport
from trading_helper.candles.calendar import SessionLoader, years_between
from trading_helper.candles.read import read_candles
from trading_helper.errors import InvalidRange
from trading_helper.models import Candle, Instrument
from trading_helper.storage.instruments import resolve_instrument
from trading_helper.timeframes import IST, Timeframe, parse_timeframe

#: the longest range one request may ask for, per timeframe (a bound on work and response size)
MAX_SPAN: dict[Timeframe, timedelta] = {
    Timeframe.M1: timedelta(days=31),
    Timeframe.M5: timedelta(days=120),
    Timeframe.M15: timedelta(days=200),
    Timeframe.H1: timedelta(days=731),
    Timeframe.D1: timedelta(days=7305),
}
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
    span = MAX_SPAN[timeframe]
    if end - start > span:
        raise InvalidRange(f"a {timeframe.value} request may span at most {span.days} days; "
                           f"this one spans {(end - start).days} days")
    return start, end


@dataclass(slots=True)
class CandleSeries:
    instrument: Instrument
    timeframe: Timeframe
    candles: list[Candle]
    backfill: BackfillReport = field(default_factory=BackfillReport)


class CandleService:
    """One per process: holds the backfill locks and the loaded calendar years."""

    def __init__(self, pool: asyncpg.Pool, broker: Broker | None) -> None:
        self.pool = pool
        self.broker = broker
        self.sessions = SessionLoader()
        self.backfiller = Backfiller(pool, broker) if broker is not None else None
        self._calendars: dict[int, str] = {}

    async def resolve(self, ref: str | int) -> Instrument:
        async with self.pool.acquire() as conn:
            return await resolve_instrument(conn, ref, self.broker.name if self.broker else None)

    async def _calendar_of(self, instrument_id: int) -> str:
        key = self._calendars.get(instrument_id)
        if key is None:
            key = await self.pool.fetchval("SELECT instrument_calendar($1)", instrument_id)
            self._calendars[instrument_id] = key
        return key

    async def get_candles(
        self, ref: str | int, timeframe: str | Timeframe, start: datetime, end: datetime
    ) -> CandleSeries:
        tf = parse_timeframe(timeframe)
        start, end = validate_range(tf, start, end)
        instrument = await self.resolve(ref)
        assert instrument.id is not None
        now = datetime.now(UTC)
        await self.sessions.ensure(self.pool, await self._calendar_of(instrument.id),
                                   years_between(start, min(end, now)))
        report = BackfillReport()
        if self.backfiller is not None and self.broker is not None:
            token = instrument.broker_ids.get(self.broker.name)
            if token is not None:
                report = await self.backfiller.fill(instrument.id, token, tf, start, end)
        async with self.pool.acquire() as conn:
            candles = await read_candles(conn, instrument.id, tf, start, end)
        return CandleSeries(instrument, tf, candles, report)
