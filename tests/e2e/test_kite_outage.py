"""Kite end to end: a silent stall becomes a live-coverage hole, gap detection sees exactly that
hole, and backfill through KiteBroker fetches exactly it from the fake Kite's history, once.

The outage happens now, on real sockets; the broker's history of the last minutes is not final
(and may be outside a session), so the recorded coverage is then moved to a recent NSE trading
day with the hole's bounds kept to the microsecond (the capture around it stretched to half an
hour each way, as a longer run would have left it), and the candle service is asked about that
day.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path

import asyncpg

from tests.e2e.helpers import (
    Coverage,
    coverage_of,
    eventually,
    new_stream,
    persist_subscriptions,
    reset_database,
    running_service,
    sync_master,
    trades_stamped_after_capture,
    written_at_least,
)
from tests.fakes.kite_server import TRADE_LAG_S as KITE_TRADE_LAG_S
from tests.fakes.kite_server import FakeKiteServer, history_candles
from trading_helper.brokers.base import FeedState
from trading_helper.brokers.kite.broker import KiteBroker
from trading_helper.brokers.tokens import save_token
from trading_helper.candles.calendar import SessionLoader
from trading_helper.candles.gaps import Gap, find_gaps
from trading_helper.candles.service import CandleService
from trading_helper.ingest.coverage import LATE_TICK_GRACE
from trading_helper.timeframes import IST, Timeframe

RELIANCE, NIFTY_OPTION = "738561", "12345602"
STALL_S = 1.5
#: where the hole is placed on the trading day: it then spans the 10:59 and 11:00 minutes
HOLE_AT = dt_time(10, 59, 59)
AROUND = timedelta(minutes=30)
MINUTE = timedelta(minutes=1)


def full_mode(server: FakeKiteServer, tokens: set[str]) -> bool:
    """One healthy connection with every token subscribed in full mode."""
    live = [c for c in server.connections if not c.stalled]
    return (
        len(server.connections) == 1
        and len(live) == 1
        and {str(t) for t in live[0].modes} == tokens
        and set(live[0].modes.values()) == {"full"}
    )


async def recent_trading_day(pool: asyncpg.Pool) -> datetime:
    """``HOLE_AT`` on the latest weekday before today whose NSE session holds half an hour either side."""
    today = datetime.now(IST).date()
    await SessionLoader().ensure(pool, "NSE", [today.year - 1, today.year])
    rows = await pool.fetch(
        "SELECT day, lower(session) AS lo, upper(session) AS hi FROM market_sessions "
        "WHERE calendar = 'NSE' AND day < $1 AND day > $1 - 30 ORDER BY day DESC",
        today,
    )
    for row in rows:
        at = datetime.combine(row["day"], HOLE_AT, IST)
        if row["day"].weekday() < 5 and row["lo"] <= at - AROUND and at + AROUND <= row["hi"]:
            return at
    raise AssertionError(f"no NSE session in the 30 days before {today}")


async def test_a_silent_stall_is_a_hole_that_backfill_fetches_once(
    db_pool: asyncpg.Pool, redis_url: str, tmp_path: Path
) -> None:
    await reset_database(db_pool)
    tokens = {RELIANCE, NIFTY_OPTION}
    async with FakeKiteServer(heartbeat_interval_s=0.1) as server:
        settings = server.settings(
            tmp_path, REDIS_URL=redis_url, TICK_STREAM=new_stream(), STALL_TIMEOUT_S=STALL_S
        )
        save_token(settings, "kite", server.access_token)
        broker = KiteBroker(settings)
        try:
            ids = await sync_master(db_pool, broker)
            iids = sorted(ids[t] for t in tokens)
            await persist_subscriptions(db_pool, iids)
            async with running_service(settings, db_pool, broker) as service:
                await eventually(
                    lambda: full_mode(server, tokens) and service.feed.state == FeedState.CONNECTED,
                    "connected in full mode",
                    service=service,
                )
                await trades_stamped_after_capture(time.time(), KITE_TRADE_LAG_S)
                await server.push_ticks()
                await eventually(lambda: written_at_least(db_pool, 2), "first ticks written", service=service)
                # capture lasts longer than the grace a closed range gives up at its end
                await asyncio.sleep(LATE_TICK_GRACE.total_seconds() + 0.5)

                stalled_at = datetime.now(UTC)
                server.stall()  # the socket stays open; no ticks, no heartbeats
                # The housekeeping extends open coverage every few seconds while the feed says it is
                # connected, which it does until the stall is detected: do one such extension now.
                await asyncio.sleep(0.8)
                assert service.feed.state == FeedState.CONNECTED, "the stall is not detected yet"
                await service.coverage.extend(datetime.now(UTC))

                await eventually(
                    lambda: full_mode(server, tokens) and service.feed.state == FeedState.CONNECTED,
                    "reconnected and resubscribed",
                    service=service,
                )
                await trades_stamped_after_capture(time.time(), KITE_TRADE_LAG_S)
                number = server.connections[0].number
                resent = [m for n, m in server.ws_messages if n == number]
                assert {"a": "subscribe", "v": sorted(int(t) for t in tokens)} in resent
                await server.push_ticks()
                await eventually(
                    lambda: written_at_least(db_pool, 4), "ticks after the reconnect written", service=service
                )

                holes = set()
                for iid in iids:
                    ranges = await coverage_of(db_pool, iid)
                    assert [r.open for r in ranges] == [False, True], ranges
                    before, after = ranges
                    # closed at the last frame before the stall (a frame in flight may arrive just after)
                    # less the grace a late tick may still be on its way, not at the extension made 0.8 s
                    # into it
                    last_frame_by = stalled_at + timedelta(seconds=0.4)
                    assert before.upper < last_frame_by - LATE_TICK_GRACE, (before, stalled_at)
                    # a new range once the stall was detected (STALL_S of silence) and the feed reconnected
                    assert after.lower - before.upper >= timedelta(seconds=STALL_S)
                    ticks = await db_pool.fetch(
                        "SELECT received_at FROM tick_data WHERE instrument_id = $1", iid
                    )
                    assert len(ticks) == 2
                    # nothing was received in the silence (the ticks before it arrived within the grace)
                    assert not [
                        t for t in ticks if before.upper + LATE_TICK_GRACE < t["received_at"] < after.lower
                    ]
                    holes.add((before.upper, after.lower))
                assert len(holes) == 1, "the connection's instruments share its hole"
            hole_lo, hole_hi = holes.pop()

            # --- the hole, on a recent trading day --------------------------------------------
            at = await recent_trading_day(db_pool)
            window = (at.replace(second=0) - AROUND, at.replace(second=0) + AROUND)  # whole minutes
            shift = at - hole_lo
            await db_pool.execute(
                "UPDATE live_coverage SET period = CASE WHEN upper(period) <= $2 THEN tstzrange($4, upper(period) + $3)"
                " ELSE tstzrange(lower(period) + $3, $5) END WHERE instrument_id = ANY($1::integer[])",
                iids,
                hole_lo,
                shift,
                *window,
            )
            moved = [await coverage_of(db_pool, iid) for iid in iids]
            assert all(
                m == [Coverage(window[0], at, False), Coverage(hole_hi + shift, window[1], False)]
                for m in moved
            ), moved
            gap_lo = Timeframe.M1.bucket_start(at)
            gap_hi = Timeframe.M1.bucket_start(hole_hi + shift - timedelta(microseconds=1)) + MINUTE
            assert (gap_lo, gap_hi) == (at.replace(second=0), at.replace(second=0) + 2 * MINUTE)
            buckets = [gap_lo, gap_lo + MINUTE]

            async with db_pool.acquire() as conn:
                for iid in iids:
                    assert await find_gaps(conn, iid, Timeframe.M1, *window, datetime.now(UTC)) == [
                        Gap(gap_lo, gap_hi)
                    ]

            candles = CandleService(db_pool, broker)
            assert sum(server.history_calls.values()) == 0
            first = {}
            for token in sorted(tokens):
                series = await candles.get_candles(token, "1m", *window)
                assert (series.backfill.broker_calls, series.backfill.candles, series.backfill.error) == (
                    1,
                    2,
                    None,
                )
                assert server.history_calls[(token, "minute")] == 1
                request = server.history_requests[-1]
                assert (request.token, request.start, request.end) == (
                    token,
                    gap_lo,
                    gap_hi - timedelta(seconds=1),
                )
                fake = history_candles(token, "minute", gap_lo, gap_hi - timedelta(seconds=1))
                assert [
                    (c.bucket, c.source, c.open, c.high, c.low, c.close, c.volume, c.open_interest)
                    for c in series.candles
                ] == [(b, "broker", *row[1:]) for b, row in zip(buckets, fake, strict=True)]
                first[token] = series.candles
            stored = await db_pool.fetch(
                "SELECT instrument_id, timeframe, bucket FROM broker_candles ORDER BY 1, 3"
            )
            assert [tuple(r) for r in stored] == [(iid, "1m", b) for iid in iids for b in buckets]

            for token in sorted(tokens):  # asked again: the hole is fetched, nothing goes to the broker
                again = await candles.get_candles(token, "1m", *window)
                assert again.backfill.broker_calls == 0 and again.candles == first[token]
            assert sum(server.history_calls.values()) == len(tokens)
        finally:
            await broker.aclose()
