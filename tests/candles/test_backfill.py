"""Gap detection and backfill through the real Kite adapter against the local fake Kite.

Dates are fixed in the past: 2024-01-26 (Friday) was an NSE holiday (Republic Day).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from tests.candles.conftest import EXTRA_TOKENS, KiteSetup
from tests.candles.helpers import add_coverage, add_ticks, ist, minutes
from tests.e2e.helpers import eventually
from trading_helper.candles.backfill import Backfiller
from trading_helper.candles.read import read_candles
from trading_helper.candles.service import CandleService
from trading_helper.models import Candle
from trading_helper.storage.db import Connection
from trading_helper.timeframes import IST


def calls(kite: KiteSetup, token: str, interval: str = "minute") -> int:
    return kite.server.history_calls[(token, interval)]


async def test_weekend_and_holiday_make_no_broker_call(db_pool: asyncpg.Pool, kite: KiteSetup) -> None:
    token = EXTRA_TOKENS[0]
    service = CandleService(db_pool, kite.broker)
    # Friday (holiday) 00:00 to Monday 00:00: no session at all
    series = await service.get_candles(token, "1m", ist(2024, 1, 26), ist(2024, 1, 29))
    assert series.candles == [] and series.backfill.broker_calls == 0
    assert calls(kite, token) == 0
    for tf, interval in [("5m", "5minute"), ("1h", "60minute"), ("1d", "day")]:
        series = await service.get_candles(token, tf, ist(2024, 1, 26), ist(2024, 1, 29))
        assert series.backfill.broker_calls == 0 and calls(kite, token, interval) == 0


async def test_gap_inside_a_session_is_fetched_once(db_pool: asyncpg.Pool, kite: KiteSetup) -> None:
    token = EXTRA_TOKENS[1]
    iid = kite.ids[token]
    day_open, day_close = ist(2024, 1, 30, 9, 15), ist(2024, 1, 30, 15, 30)
    # captured all day except 10:00-10:30; an illiquid instrument: a trade every 7th minute only
    await add_coverage(db_pool, iid, ist(2024, 1, 30, 9, 0), ist(2024, 1, 30, 10, 0))
    await add_coverage(db_pool, iid, ist(2024, 1, 30, 10, 30), ist(2024, 1, 30, 16, 0))
    traded = [
        t for t in minutes(day_open, day_close, 7) if not ist(2024, 1, 30, 10) <= t < ist(2024, 1, 30, 10, 30)
    ]
    await add_ticks(db_pool, iid, [t + timedelta(seconds=5) for t in traded])

    service = CandleService(db_pool, kite.broker)
    series = await service.get_candles(token, "1m", ist(2024, 1, 30), ist(2024, 1, 31))
    assert series.backfill.broker_calls == 1 and series.backfill.fetched_ranges == 1
    assert calls(kite, token) == 1
    request = kite.server.history_requests[-1]
    assert (request.start, request.end) == (ist(2024, 1, 30, 10), ist(2024, 1, 30, 10, 29, 59))

    buckets = [c.bucket for c in series.candles]
    assert buckets == sorted(set(buckets)), "one candle per bucket, in order"
    by_source: dict[str, int] = {}
    for c in series.candles:
        by_source[c.source] = by_source.get(c.source, 0) + 1
    assert by_source == {"live": len(traded), "broker": 30}
    assert all(
        c.source == "broker"
        for c in series.candles
        if ist(2024, 1, 30, 10) <= c.bucket < ist(2024, 1, 30, 10, 30)
    )

    again = await service.get_candles(token, "1m", ist(2024, 1, 30), ist(2024, 1, 31))
    assert again.backfill.broker_calls == 0 and calls(kite, token) == 1
    assert again.candles == series.candles
    # a new service (a restart) knows it from the database, not from memory
    fresh = await CandleService(db_pool, kite.broker).get_candles(
        token, "1m", ist(2024, 1, 30), ist(2024, 1, 31)
    )
    assert fresh.backfill.broker_calls == 0 and calls(kite, token) == 1


async def test_partially_captured_minute_is_replaced_by_the_broker_candle(
    db_pool: asyncpg.Pool, kite: KiteSetup
) -> None:
    token = EXTRA_TOKENS[2]
    iid = kite.ids[token]
    # the connection came up at 11:00:30: the 11:00 minute is only half captured
    await add_coverage(db_pool, iid, ist(2024, 2, 1, 11, 0, 30), ist(2024, 2, 1, 11, 10))
    await add_ticks(db_pool, iid, [ist(2024, 2, 1, 11, m, 40) for m in range(10)])
    no_broker = await CandleService(db_pool, None).get_candles(
        f"id:{iid}", "1m", ist(2024, 2, 1, 11), ist(2024, 2, 1, 11, 10)
    )
    assert [c.source for c in no_broker.candles] == ["partial"] + ["live"] * 9

    series = await CandleService(db_pool, kite.broker).get_candles(
        f"id:{iid}", "1m", ist(2024, 2, 1, 11), ist(2024, 2, 1, 11, 10)
    )
    assert [c.source for c in series.candles] == ["broker"] + ["live"] * 9
    assert series.backfill.broker_calls == 1
    request = kite.server.history_requests[-1]
    assert (request.start, request.end) == (ist(2024, 2, 1, 11), ist(2024, 2, 1, 11, 0, 59))


async def test_twenty_concurrent_identical_requests_make_one_broker_call(
    db_pool: asyncpg.Pool, kite: KiteSetup
) -> None:
    token = EXTRA_TOKENS[3]
    service = CandleService(db_pool, kite.broker)
    results = await asyncio.gather(
        *[service.get_candles(token, "5m", ist(2024, 2, 5, 9), ist(2024, 2, 5, 16)) for _ in range(20)]
    )
    assert calls(kite, token, "5minute") == 1
    assert sum(r.backfill.broker_calls for r in results) == 1
    assert all(len(r.candles) == 75 and r.candles == results[0].candles for r in results)  # 09:15-15:30


async def test_daily_candles_land_on_our_day_buckets(db_pool: asyncpg.Pool, kite: KiteSetup) -> None:
    token = EXTRA_TOKENS[4]
    service = CandleService(db_pool, kite.broker)
    series = await service.get_candles(token, "1d", ist(2024, 1, 22), ist(2024, 2, 3))
    assert series.backfill.broker_calls == 1 and calls(kite, token, "day") == 1
    request = kite.server.history_requests[-1]
    # 2024-01-22 was a holiday too (special closure): the first gap is the 23rd, asked from its 00:00
    assert request.start == ist(2024, 1, 23) and request.end.date() == ist(2024, 2, 2).date()
    local = [c.bucket.astimezone(IST) for c in series.candles]
    assert all(b.time() == ist(2024, 1, 1, 0, 15).time() for b in local)
    assert {b.date() for b in local} >= {ist(2024, 1, 23).date(), ist(2024, 2, 2).date()}
    assert all(c.source == "broker" for c in series.candles)


async def test_a_broker_error_keeps_what_is_stored_and_retries_later(
    db_pool: asyncpg.Pool, kite: KiteSetup
) -> None:
    token = EXTRA_TOKENS[5]
    service = CandleService(db_pool, kite.broker)
    kite.server.history_failures.append(403)  # the session expired
    series = await service.get_candles(token, "15m", ist(2024, 2, 6), ist(2024, 2, 7))
    assert series.candles == [] and series.backfill.error is not None
    assert series.backfill.error.code == "login_required"
    assert service.backfiller is not None and service.backfiller.status()["error"]  # type: ignore[index]
    retry = await service.get_candles(token, "15m", ist(2024, 2, 6), ist(2024, 2, 7))
    assert retry.backfill.error is None and retry.backfill.broker_calls == 1 and len(retry.candles) == 25


async def test_naive_times_are_ist(db_pool: asyncpg.Pool, kite: KiteSetup) -> None:
    token = EXTRA_TOKENS[6]
    service = CandleService(db_pool, kite.broker)
    naive = await service.get_candles(
        token, "1h", ist(2024, 2, 7).replace(tzinfo=None), ist(2024, 2, 8).replace(tzinfo=None)
    )
    aware = await service.get_candles(token, "1h", ist(2024, 2, 7), ist(2024, 2, 8))
    assert naive.candles == aware.candles and len(aware.candles) == 7  # 09:15 .. 15:15
    assert aware.candles[0].bucket == ist(2024, 2, 7, 9, 15)


async def test_backfills_of_many_instruments_leave_the_pool_connections_for_reads(
    db_pool: asyncpg.Pool, kite: KiteSetup
) -> None:
    """A backfill holds a connection (its lock's transaction) through its broker calls: at most
    half the pool's at once, so a page of uncovered charts never leaves a read waiting."""
    tokens = EXTRA_TOKENS[8:12]  # four instruments at once, on a pool of 4 connections
    service = CandleService(db_pool, kite.broker)
    kite.server.history_delay_s = 1.5
    try:
        fills = asyncio.gather(
            *[service.get_candles(t, "1m", ist(2024, 2, 8), ist(2024, 2, 9)) for t in tokens]
        )
        await eventually(lambda: kite.server.history_waiting > 0, "a backfill waiting on the broker")
        await asyncio.sleep(0.2)  # the others are in theirs, or waiting for a connection slot
        began = time.monotonic()
        assert await db_pool.fetchval("SELECT 1") == 1
        waited = time.monotonic() - began
        results = await fills
    finally:
        kite.server.history_delay_s = 0.0
    assert waited < 0.75, f"a read waited {waited:.2f} s for a connection"
    assert all(len(r.candles) == 375 and r.backfill.broker_calls == 1 for r in results)
    assert all(calls(kite, t) == 1 for t in tokens)


async def test_the_series_is_read_after_the_gap_check_never_before_it(
    db_pool: asyncpg.Pool, kite: KiteSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read side by side with the gap check, a series could be older than the check: read before
    another request's backfill committed, checked after it, no gap found, and the gap served (20
    identical requests, one of them short, in a CI run). Now the read starts once the check is
    done, on its connection."""
    order: list[str] = []
    check = Backfiller.has_gaps

    async def checked(self: Backfiller, conn: Connection, *args: Any) -> bool:
        found = await check(self, conn, *args)
        order.append("checked")
        return found

    async def read(conn: Connection, *args: Any) -> list[Candle]:
        order.append("read")
        return await read_candles(conn, *args)

    monkeypatch.setattr(Backfiller, "has_gaps", checked)
    service = CandleService(db_pool, kite.broker)
    series = await service.get_candles(EXTRA_TOKENS[7], "1m", ist(2024, 1, 27), ist(2024, 1, 29), read=read)
    assert series.candles == [] and series.backfill.broker_calls == 0  # a weekend: nothing missing
    assert order == ["checked", "read"]
