"""Trading sessions per exchange calendar, loaded into ``market_sessions`` for the gap arithmetic.

Holidays come from ``pandas_market_calendars`` (its ``NSE`` calendar, and ``XBOM`` for BSE),
a maintained package: nights, weekends and holidays are then never mistaken for gaps. Sessions
are written per calendar and year, tagged with the package version, so a newer package (holidays
are announced a year ahead) reloads the years it may change.

Calendars (``market_calendars`` maps an instrument's exchange to one):

- ``NSE``: NSE cash, F&O and indices, 09:15-15:30 IST, special sessions (Muhurat) as listed.
- ``BSE``: BSE cash and F&O, the same hours, BSE's holidays.
- ``CDS``: currency derivatives, 09:00-17:00 IST on NSE trading days.
- ``MCX``: commodities, 09:00-23:55 IST on weekdays. MCX keeps its evening session on most
  exchange holidays and closes at 23:30 outside US daylight saving; no package lists its
  holidays, so the session is taken wide: a range the broker answers empty is recorded as
  fetched and not asked again.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import asyncpg

from trading_helper.storage import sql_calendar
from trading_helper.storage.db import Connection
from trading_helper.timeframes import IST

_PACKAGE = "pandas_market_calendars"


@dataclass(frozen=True, slots=True)
class CalendarSpec:
    key: str
    #: the package's calendar giving trading days (and hours when ``hours`` is None); None: weekdays
    package_calendar: str | None
    #: fixed session hours (IST) on each trading day, overriding the package's hours
    hours: tuple[time, time] | None = None


CALENDARS: dict[str, CalendarSpec] = {
    "NSE": CalendarSpec("NSE", "NSE"),
    "BSE": CalendarSpec("BSE", "XBOM"),
    "CDS": CalendarSpec("CDS", "NSE", (time(9, 0), time(17, 0))),
    "MCX": CalendarSpec("MCX", None, (time(9, 0), time(23, 55))),
}
DEFAULT_CALENDAR = "NSE"

Session = tuple[date, datetime, datetime]  # (trading day, open, close), aware


def package_source() -> str:
    """What the sessions were computed from; stored with each loaded year."""
    return f"{_PACKAGE} {importlib.metadata.version(_PACKAGE)}"


def _at(day: date, clock: time) -> datetime:
    return datetime.combine(day, clock, tzinfo=IST)


def year_sessions(key: str, year: int) -> list[Session]:
    """The sessions of ``year`` in calendar ``key`` (CPU-bound: call it in a thread)."""
    spec = CALENDARS.get(key, CALENDARS[DEFAULT_CALENDAR])
    first, last = date(year, 1, 1), date(year, 12, 31)
    if spec.package_calendar is None:
        assert spec.hours is not None
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        return [(d, _at(d, spec.hours[0]), _at(d, spec.hours[1])) for d in days if d.weekday() < 5]
    import pandas_market_calendars as mcal  # heavy (pandas): imported on first use only

    schedule = mcal.get_calendar(spec.package_calendar).schedule(start_date=first, end_date=last)
    out: list[Session] = []
    for label, row in schedule.iterrows():
        day = label.date()
        if spec.hours is not None:
            out.append((day, _at(day, spec.hours[0]), _at(day, spec.hours[1])))
        else:
            out.append(
                (
                    day,
                    row["market_open"].to_pydatetime().astimezone(IST),
                    row["market_close"].to_pydatetime().astimezone(IST),
                )
            )
    return out


def years_between(start: datetime, end: datetime) -> range:
    """IST calendar years touched by [start, end]."""
    return range(start.astimezone(IST).year, end.astimezone(IST).year + 1)


class SessionLoader:
    """Makes sure ``market_sessions`` holds the years a request touches; remembers what it did,
    so a warm process answers from memory."""

    def __init__(self) -> None:
        self._done: set[tuple[str, int]] = set()
        self._lock = asyncio.Lock()
        self._source = package_source()

    async def ensure(self, pool: asyncpg.Pool, key: str, years: Iterable[int]) -> None:
        wanted = [y for y in years if (key, y) not in self._done]
        if not wanted:
            return
        async with self._lock:
            wanted = [y for y in wanted if (key, y) not in self._done]
            if not wanted:
                return
            async with pool.acquire() as conn:
                missing = [
                    r["y"] for r in await conn.fetch(sql_calendar.YEARS_TO_LOAD, key, wanted, self._source)
                ]
                for year in missing:
                    sessions = await asyncio.to_thread(year_sessions, key, year)
                    await self._store(conn, key, year, sessions)
            self._done.update((key, y) for y in wanted)

    async def _store(self, conn: Connection, key: str, year: int, sessions: list[Session]) -> None:
        async with conn.transaction():
            await conn.execute(sql_calendar.LOCK_YEAR, key, year)
            await conn.execute(sql_calendar.DELETE_YEAR, key, date(year, 1, 1), date(year, 12, 31))
            if sessions:
                days, opens, closes = zip(*sessions, strict=True)
                await conn.execute(sql_calendar.INSERT_SESSIONS, key, list(days), list(opens), list(closes))
            await conn.execute(sql_calendar.RECORD_LOAD, key, year, self._source)
