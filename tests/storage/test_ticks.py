from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from tests.storage.helpers import make_instruments, reset_market_data
from trading_helper.models import Tick
from trading_helper.storage.candles import read_live_candles, refresh_candles
from trading_helper.storage.ticks import StreamOffset, TickWriter, VolumeReset
from trading_helper.timeframes import IST


def tick(iid: int, ts: datetime, price: float = 100.0, volume: int | None = None, qty: int | None = None,
         oi: int | None = None) -> Tick:
    return Tick(instrument_id=iid, exchange_ts=ts, received_ts=datetime.now(UTC), last_price=price,
                last_quantity=qty, volume=volume, open_interest=oi)


async def test_bad_ticks_are_counted_and_never_abort_good_ones(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    [a, b] = await make_instruments(db_pool, 2, prefix="BAD")
    writer = await TickWriter.open(db_pool)
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    batch = [
        tick(a, now, 101.0),
        tick(a, now, -1.0),                                    # non-positive price
        tick(b, now, float("nan")),                            # not a price
        tick(b, now.replace(tzinfo=None), 99.0),               # naive timestamp
        tick(b, now - timedelta(days=60), 99.0),               # absurdly old
        tick(b, now + timedelta(days=400), 99.0),              # absurdly far in the future
        tick(999_999, now, 99.0),                              # unknown instrument
        tick(b, now + timedelta(seconds=1), 102.5),
    ]
    result = await writer.write(batch, offset=StreamOffset("s", "5-0"))
    assert result.written == 2
    assert dict(result.rejected) == {"bad_price": 2, "naive_timestamp": 1, "timestamp_out_of_range": 2,
                                     "unknown_instrument": 1}
    rows = await db_pool.fetch("SELECT instrument_id, ltp FROM tick_data ORDER BY time")
    assert [(r[0], r[1]) for r in rows] == [(a, 101.0), (b, 102.5)]
    assert await db_pool.fetchval("SELECT last_id FROM ingest_offsets WHERE stream = 's'") == "5-0"


async def test_same_second_ticks_keep_arrival_order_for_open_and_close(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    [a] = await make_instruments(db_pool, 1, prefix="TIE")
    writer = await TickWriter.open(db_pool)
    second = datetime.now(UTC).replace(second=10, microsecond=0) - timedelta(minutes=3)
    await writer.write([tick(a, second, p) for p in (100.0, 105.0, 95.0, 101.0)])
    times = [r[0] for r in await db_pool.fetch("SELECT time FROM tick_data ORDER BY time")]
    assert len(set(times)) == 4 and all(t.replace(microsecond=0) == second for t in times)
    async with db_pool.acquire() as conn:
        await refresh_candles(conn)
        [candle] = await read_live_candles(conn, a, "1m", second - timedelta(minutes=1), second + timedelta(minutes=1))
    assert (candle.open, candle.high, candle.low, candle.close) == (100.0, 105.0, 95.0, 101.0)


async def test_volume_increments_survive_restart_and_reset_daily(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    [a] = await make_instruments(db_pool, 1, prefix="VOL")
    day1 = (datetime.now(IST) - timedelta(days=2)).replace(hour=9, minute=15, second=5, microsecond=0)
    writer = await TickWriter.open(db_pool)
    await writer.write([tick(a, day1, volume=1000, qty=10), tick(a, day1 + timedelta(seconds=5), volume=1300, qty=50)])
    # a new process: the previous cumulative volume comes from the database
    writer = await TickWriter.open(db_pool)
    await writer.write([
        tick(a, day1 + timedelta(seconds=9), volume=1250, qty=5),     # late, smaller: adds nothing
        tick(a, day1 + timedelta(seconds=10), volume=1500, qty=20),
        tick(a, day1 + timedelta(days=1, seconds=-1), volume=400, qty=40),  # next IST day: reset
    ])
    deltas = [r[0] for r in await db_pool.fetch("SELECT volume_delta FROM tick_data ORDER BY received_at, time")]
    assert deltas == [1000, 300, 0, 200, 400]
    # after a reconnect the first volume only counts its own trade, not the unseen gap
    await writer.write([VolumeReset(frozenset({a})),
                        tick(a, day1 + timedelta(days=1, hours=3), volume=9000, qty=25)])
    last = await db_pool.fetchval("SELECT volume_delta FROM tick_data ORDER BY time DESC LIMIT 1")
    assert last == 25


async def test_forming_candle_is_visible_before_any_refresh(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    [a] = await make_instruments(db_pool, 1, prefix="LIVE")
    writer = await TickWriter.open(db_pool)
    now = datetime.now(UTC)
    await writer.write([tick(a, now - timedelta(seconds=1), 10.0, volume=5, qty=5),
                        tick(a, now, 12.0, volume=8, qty=3)])
    async with db_pool.acquire() as conn:
        for tf in ("1m", "5m", "15m", "1h", "1d"):
            candles = await read_live_candles(conn, a, tf, now - timedelta(days=2), now + timedelta(days=1))
            assert candles, tf
            assert candles[-1].close == 12.0 and candles[-1].high == 12.0, tf
