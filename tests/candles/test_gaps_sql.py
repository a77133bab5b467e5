"""The gap arithmetic (SQL ``candle_gaps``) and the calendar it stands on, without a broker."""

from __future__ import annotations

from datetime import date, datetime

import asyncpg
import pytest

from tests.candles.helpers import add_coverage, ist
from tests.storage.helpers import make_instruments
from trading_helper.candles.calendar import SessionLoader, year_sessions
from trading_helper.candles.gaps import Gap, fetch_windows, find_gaps
from trading_helper.timeframes import IST, Timeframe


def test_nse_calendar_knows_holidays_and_muhurat() -> None:
    sessions = {day: (o, c) for day, o, c in year_sessions("NSE", 2024)}
    assert date(2024, 1, 26) not in sessions and date(2024, 1, 27) not in sessions  # holiday, Saturday
    assert sessions[date(2024, 1, 30)] == (ist(2024, 1, 30, 9, 15), ist(2024, 1, 30, 15, 30))
    assert sessions[date(2024, 11, 1)] == (ist(2024, 11, 1, 18), ist(2024, 11, 1, 19))  # Muhurat trading
    mcx = {day: (o, c) for day, o, c in year_sessions("MCX", 2024)}
    assert mcx[date(2024, 1, 26)] == (ist(2024, 1, 26, 9), ist(2024, 1, 26, 23, 55))


def test_nearby_gaps_share_one_fetch() -> None:
    gaps = [Gap(ist(2024, 1, d, 9, 15), ist(2024, 1, d, 15, 30)) for d in (1, 2, 3)]
    assert fetch_windows(gaps, Timeframe.M1) == [Gap(gaps[0].start, gaps[2].end)]
    far = [
        Gap(ist(2024, 1, 1, 9, 15), ist(2024, 1, 1, 15, 30)),
        Gap(ist(2024, 3, 1, 9, 15), ist(2024, 3, 1, 15, 30)),
    ]
    assert fetch_windows(far, Timeframe.M1) == far


@pytest.fixture(scope="module")
async def loaded(db_pool: asyncpg.Pool) -> list[int]:
    await SessionLoader().ensure(db_pool, "NSE", [2024])
    return await make_instruments(db_pool, 4, prefix="GAP")


async def gaps(
    pool: asyncpg.Pool, iid: int, tf: str, start: datetime, end: datetime, until: datetime | None = None
) -> list[tuple[datetime, datetime]]:
    async with pool.acquire() as conn:
        found = await find_gaps(conn, iid, Timeframe(tf), start, end, until or ist(2030, 1, 1))
    return [(g.start.astimezone(IST), g.end.astimezone(IST)) for g in found]


async def test_sessions_only_and_nothing_past_until(db_pool: asyncpg.Pool, loaded: list[int]) -> None:
    iid = loaded[0]
    assert await gaps(
        db_pool, iid, "1m", ist(2024, 2, 12, 9), ist(2024, 2, 12, 12), ist(2024, 2, 12, 11, 0, 30)
    ) == [(ist(2024, 2, 12, 9, 15), ist(2024, 2, 12, 11))]
    # a request starting inside a bucket asks from the next whole bucket
    assert await gaps(db_pool, iid, "15m", ist(2024, 2, 12, 9, 20), ist(2024, 2, 12, 10, 1)) == [
        (ist(2024, 2, 12, 9, 30), ist(2024, 2, 12, 10, 15))
    ]
    assert await gaps(db_pool, iid, "1m", ist(2024, 2, 10), ist(2024, 2, 12)) == []  # weekend
    assert await gaps(db_pool, iid, "1d", ist(2024, 10, 31), ist(2024, 11, 3)) == [
        (ist(2024, 10, 31, 0, 15), ist(2024, 11, 2, 0, 15))
    ]
    assert await gaps(db_pool, iid, "1m", ist(2024, 11, 1), ist(2024, 11, 2)) == [
        (ist(2024, 11, 1, 18), ist(2024, 11, 1, 19))
    ]


async def test_captured_and_fetched_ranges_are_not_gaps(db_pool: asyncpg.Pool, loaded: list[int]) -> None:
    iid = loaded[1]
    await add_coverage(db_pool, iid, ist(2024, 2, 13, 9, 10), ist(2024, 2, 13, 12, 0, 20))
    assert await gaps(db_pool, iid, "1m", ist(2024, 2, 13), ist(2024, 2, 14)) == [
        (ist(2024, 2, 13, 12), ist(2024, 2, 13, 15, 30))
    ]
    assert await gaps(db_pool, iid, "1h", ist(2024, 2, 13), ist(2024, 2, 14)) == [
        (ist(2024, 2, 13, 11, 15), ist(2024, 2, 13, 16, 15))
    ]
    await db_pool.execute(
        "INSERT INTO fetch_coverage (instrument_id, timeframe, period, candles, source) "
        "VALUES ($1, '1m', tstzrange($2, $3), 0, 'kite')",
        iid,
        ist(2024, 2, 13, 12),
        ist(2024, 2, 13, 15),
    )
    assert await gaps(db_pool, iid, "1m", ist(2024, 2, 13), ist(2024, 2, 14)) == [
        (ist(2024, 2, 13, 15), ist(2024, 2, 13, 15, 30))
    ]
    # another timeframe's fetches do not count
    assert await gaps(db_pool, iid, "5m", ist(2024, 2, 13), ist(2024, 2, 14)) == [
        (ist(2024, 2, 13, 12), ist(2024, 2, 13, 15, 30))
    ]


async def test_sql_refuses_unknown_timeframes(db_pool: asyncpg.Pool, loaded: list[int]) -> None:
    for sql in (
        "SELECT * FROM candle_gaps($1, '2m', now() - interval '1 day', now(), now())",
        "SELECT * FROM read_candles($1, '1m; DROP TABLE x', now() - interval '1 day', now())",
    ):
        with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown timeframe"):
            await db_pool.fetch(sql, loaded[2])


async def test_a_newer_calendar_package_reloads_the_year(db_pool: asyncpg.Pool, loaded: list[int]) -> None:
    await db_pool.execute(
        "UPDATE market_calendar_loads SET source = 'older' WHERE calendar = 'NSE' AND year = 2024"
    )
    await db_pool.execute("DELETE FROM market_sessions WHERE calendar = 'NSE' AND day = '2024-02-14'")
    await SessionLoader().ensure(db_pool, "NSE", [2024])
    count = await db_pool.fetchval(
        "SELECT count(*) FROM market_sessions WHERE calendar = 'NSE' AND day >= '2024-01-01' AND day < '2025-01-01'"
    )
    assert count == len(year_sessions("NSE", 2024))
    source = await db_pool.fetchval(
        "SELECT source FROM market_calendar_loads WHERE calendar = 'NSE' AND year = 2024"
    )
    assert source.startswith("pandas_market_calendars ")
