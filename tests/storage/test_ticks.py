from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from tests.ingest.direct_writer import DirectWriter
from tests.storage.candles import read_live_candles, refresh_candles
from tests.storage.helpers import make_instruments, reset_market_data
from trading_helper.ingest.batch import VolumeReset
from trading_helper.ingest.volume import VolumeTracker, ist_day, to_us
from trading_helper.models import Tick
from trading_helper.storage import queries, ticks
from trading_helper.storage.ticks import StreamOffset
from trading_helper.timeframes import IST


def tick(
    iid: int,
    ts: datetime,
    price: float = 100.0,
    volume: int | None = None,
    qty: int | None = None,
    oi: int | None = None,
) -> Tick:
    return Tick(
        instrument_id=iid,
        exchange_ts=ts,
        received_ts=datetime.now(UTC),
        last_price=price,
        last_quantity=qty,
        volume=volume,
        open_interest=oi,
    )


async def test_bad_ticks_are_counted_and_never_abort_good_ones(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    [a, b] = await make_instruments(db_pool, 2, prefix="BAD")
    writer = await DirectWriter.open(db_pool)
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    batch = [
        tick(a, now, 101.0),
        tick(a, now, -1.0),  # non-positive price
        tick(b, now, float("nan")),  # not a price
        tick(b, now.replace(tzinfo=None), 99.0),  # naive timestamp
        tick(b, now - timedelta(days=60), 99.0),  # absurdly old
        tick(b, now + timedelta(days=400), 99.0),  # absurdly far in the future
        tick(999_999, now, 99.0),  # unknown instrument
        tick(b, now + timedelta(seconds=1), 102.5),
    ]
    result = await writer.write(batch, offset=StreamOffset("s", "5-0"))
    assert result.written == 2
    assert dict(result.rejected) == {
        "bad_price": 2,
        "naive_timestamp": 1,
        "timestamp_out_of_range": 2,
        "unknown_instrument": 1,
    }
    rows = await db_pool.fetch("SELECT instrument_id, ltp FROM tick_data ORDER BY time")
    assert [(r[0], r[1]) for r in rows] == [(a, 101.0), (b, 102.5)]
    assert await db_pool.fetchval("SELECT last_id FROM ingest_offsets WHERE stream = 's'") == "5-0"


async def test_same_second_ticks_keep_arrival_order_for_open_and_close(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    [a] = await make_instruments(db_pool, 1, prefix="TIE")
    writer = await DirectWriter.open(db_pool)
    second = datetime.now(UTC).replace(second=10, microsecond=0) - timedelta(minutes=3)
    await writer.write([tick(a, second, p) for p in (100.0, 105.0, 95.0, 101.0)])
    times = [r[0] for r in await db_pool.fetch("SELECT time FROM tick_data ORDER BY time")]
    assert len(set(times)) == 4 and all(t.replace(microsecond=0) == second for t in times)
    async with db_pool.acquire() as conn:
        await refresh_candles(conn)
        [candle] = await read_live_candles(
            conn, a, "1m", second - timedelta(minutes=1), second + timedelta(minutes=1)
        )
    assert (candle.open, candle.high, candle.low, candle.close) == (100.0, 105.0, 95.0, 101.0)


async def test_volume_increments_survive_restart_and_reset_daily(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    [a] = await make_instruments(db_pool, 1, prefix="VOL")
    day1 = (datetime.now(IST) - timedelta(days=2)).replace(hour=9, minute=15, second=5, microsecond=0)
    writer = await DirectWriter.open(db_pool)
    await writer.write(
        [tick(a, day1, volume=1000, qty=10), tick(a, day1 + timedelta(seconds=5), volume=1300, qty=50)]
    )
    # a new process: the previous cumulative volume comes from the database
    writer = await DirectWriter.open(db_pool)
    await writer.write(
        [
            tick(a, day1 + timedelta(seconds=9), volume=1250, qty=5),  # late, smaller: adds nothing
            tick(a, day1 + timedelta(seconds=10), volume=1500, qty=20),
            tick(a, day1 + timedelta(days=1, seconds=-1), volume=400, qty=40),  # next IST day: reset
        ]
    )
    deltas = [
        r[0] for r in await db_pool.fetch("SELECT volume_delta FROM tick_data ORDER BY received_at, time")
    ]
    assert deltas == [1000, 300, 0, 200, 400]
    # a reconnect keeps the baseline: the first trade after it gets what was traded meanwhile
    day2 = day1 + timedelta(days=1, hours=3)
    await writer.write(
        [VolumeReset(frozenset({a}), to_us(day2 - timedelta(seconds=30))), tick(a, day2, volume=9000, qty=25)]
    )
    last = await db_pool.fetchval("SELECT volume_delta FROM tick_data ORDER BY time DESC LIMIT 1")
    assert last == 9000 - 400
    # twelve restarts and reconnects before 09:16 IST credit nothing already counted
    morning = day1.replace(hour=9, minute=0, second=0) + timedelta(days=2)
    for n in range(12):
        writer = await DirectWriter.open(db_pool)
        at = morning + timedelta(seconds=20 * n)
        await writer.write(
            [
                VolumeReset(frozenset({a}), to_us(at)),
                tick(a, at + timedelta(seconds=1), volume=100 * (n + 1), qty=100),
            ]
        )
    day3 = await db_pool.fetchval(
        "SELECT sum(volume_delta) FROM tick_data WHERE time >= $1 AND time < $1 + interval '1 hour'", morning
    )
    assert day3 == 1200


def kite_tick(
    iid: int, exchange: datetime, trade: datetime, price: float, volume: int, qty: int, bid: float = 99.0
) -> Tick:
    return Tick(
        instrument_id=iid,
        exchange_ts=exchange,
        received_ts=datetime.now(UTC),
        last_price=price,
        last_quantity=qty,
        volume=volume,
        bid_price=bid,
        trade_ts=trade,
    )


async def test_updates_without_a_new_trade_are_stored_apart_and_move_no_candle(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    [a] = await make_instruments(db_pool, 1, prefix="QUO")
    writer = await DirectWriter.open(db_pool)
    t0 = datetime.now(IST).replace(hour=11, minute=0, second=0, microsecond=0) - timedelta(days=1)
    capture = t0 + timedelta(minutes=2)
    updates = [
        # the snapshot at subscribe time: its last trade was 2 minutes before capture started
        kite_tick(a, capture, t0 + timedelta(seconds=5), 100.0, 5000, 10),
        kite_tick(a, capture + timedelta(seconds=1), t0 + timedelta(seconds=5), 100.0, 5000, 10, bid=99.5),
        kite_tick(a, capture + timedelta(seconds=61), capture + timedelta(seconds=60), 101.0, 5040, 40),
        kite_tick(
            a, capture + timedelta(seconds=62), capture + timedelta(seconds=60), 101.0, 5040, 40, bid=100.5
        ),
        kite_tick(a, capture + timedelta(seconds=63), capture + timedelta(seconds=62), 100.5, 5045, 5),
    ]
    result = await writer.write([VolumeReset(frozenset({a}), to_us(capture)), *updates])
    assert result.written == 5 and not result.rejected
    trades = [
        tuple(r)
        for r in await db_pool.fetch(
            "SELECT time, exchange_time, ltp, volume_delta FROM tick_data ORDER BY time"
        )
    ]
    assert trades == [
        (capture + timedelta(seconds=60), capture + timedelta(seconds=61), 101.0, 40),
        (capture + timedelta(seconds=62), capture + timedelta(seconds=63), 100.5, 5),
    ]
    quotes = [
        tuple(r)
        for r in await db_pool.fetch(
            "SELECT time, trade_time, bid_price, volume FROM quote_updates ORDER BY time"
        )
    ]
    assert quotes == [
        (capture, t0 + timedelta(seconds=5), 99.0, 5000),
        (capture + timedelta(seconds=1), t0 + timedelta(seconds=5), 99.5, 5000),
        (capture + timedelta(seconds=62), capture + timedelta(seconds=60), 100.5, 5040),
    ]
    async with db_pool.acquire() as conn:
        await refresh_candles(conn)
        candles = await read_live_candles(
            conn, a, "1m", t0 - timedelta(minutes=5), t0 + timedelta(minutes=15)
        )
    assert [(c.bucket, c.open, c.close, c.volume) for c in candles] == [
        (capture + timedelta(minutes=1), 101.0, 100.5, 45)
    ]
    # a restart: the baseline and the capture start come back from tick_volume_state, and the
    # snapshot of the same last trade after a reconnect is again no new trade
    writer = await DirectWriter.open(db_pool)
    again = capture + timedelta(minutes=3)
    result = await writer.write(
        [
            VolumeReset(frozenset({a}), to_us(again)),
            kite_tick(a, again, capture + timedelta(seconds=62), 100.5, 5045, 5),
        ]
    )
    assert result.written == 1
    assert await db_pool.fetchval("SELECT count(*) FROM tick_data") == 2
    assert await db_pool.fetchval("SELECT count(*) FROM quote_updates") == 4


async def test_capture_start_survives_a_restart_before_the_first_tick(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    [a] = await make_instruments(db_pool, 1, prefix="CAP")
    capture = datetime.now(IST).replace(hour=11, minute=0, second=0, microsecond=0) - timedelta(days=1)
    writer = await DirectWriter.open(db_pool)
    await writer.write([VolumeReset(frozenset({a}), to_us(capture))])
    writer = await DirectWriter.open(db_pool)
    await writer.write(
        [kite_tick(a, capture + timedelta(seconds=2), capture - timedelta(minutes=40), 50.0, 700, 7)]
    )
    assert await db_pool.fetchval("SELECT count(*) FROM tick_data") == 0
    assert await db_pool.fetchval("SELECT count(*) FROM quote_updates") == 1
    # the next trade is credited exactly what was traded since that snapshot
    await writer.write(
        [kite_tick(a, capture + timedelta(seconds=9), capture + timedelta(seconds=8), 50.5, 730, 10)]
    )
    assert [tuple(r) for r in await db_pool.fetch("SELECT time, volume_delta FROM tick_data")] == [
        (capture + timedelta(seconds=8), 30)
    ]


async def test_forming_candle_is_visible_before_any_refresh(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    [a] = await make_instruments(db_pool, 1, prefix="LIVE")
    writer = await DirectWriter.open(db_pool)
    now = datetime.now(UTC)
    await writer.write(
        [tick(a, now - timedelta(seconds=1), 10.0, volume=5, qty=5), tick(a, now, 12.0, volume=8, qty=3)]
    )
    async with db_pool.acquire() as conn:
        for tf in ("1m", "5m", "15m", "1h", "1d"):
            candles = await read_live_candles(conn, a, tf, now - timedelta(days=2), now + timedelta(days=1))
            assert candles, tf
            assert candles[-1].close == 12.0 and candles[-1].high == 12.0, tf


async def test_missing_ids_are_looked_up_and_unknown_ones_asked_again_only_after_a_second(
    db_pool: asyncpg.Pool,
) -> None:
    await reset_market_data(db_pool)
    now = [1000.0]
    writer = await DirectWriter.open(db_pool)
    writer.set_clock(lambda: now[0])
    [late] = await make_instruments(db_pool, 1, prefix="AFTER")  # added after the writer loaded its ids
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    result = await writer.write([tick(late, ts)])
    assert (result.written, dict(result.rejected), writer.id_lookups) == (1, {}, 1)
    for n in range(50):  # a flood of ticks of an id that is no instrument
        result = await writer.write([tick(888_888, ts + timedelta(milliseconds=n))])
        assert dict(result.rejected) == {"unknown_instrument": 1}
    assert writer.id_lookups == 2, "one query for the unknown id within its second"
    now[0] += 1.01
    await writer.write([tick(888_888, ts)])
    assert writer.id_lookups == 3


async def test_rows_the_database_refuses_are_dead_lettered_with_the_rest_written(
    db_pool: asyncpg.Pool,
) -> None:
    await reset_market_data(db_pool)
    [a] = await make_instruments(db_pool, 1, prefix="DL")
    writer = await DirectWriter.open(db_pool)
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    await db_pool.execute("ALTER TABLE tick_data ADD CONSTRAINT test_price_cap CHECK (ltp < 1000)")
    try:
        batch = [
            tick(a, ts + timedelta(seconds=n), 2000.0 if n in (3, 4, 17) else 100.0 + n, volume=10 * n, qty=1)
            for n in range(1, 41)
        ]
        result = await writer.write(batch, offset=StreamOffset("dl", "9-0"))
    finally:
        await db_pool.execute("ALTER TABLE tick_data DROP CONSTRAINT test_price_cap")
    assert result.written == 37 and len(result.dead_letters) == 3
    refused = await db_pool.fetch("SELECT row, sqlstate, stream FROM tick_rejects ORDER BY (row->>'time')")
    assert [r["sqlstate"] for r in refused] == ["23514"] * 3 and {r["stream"] for r in refused} == {"dl"}
    assert await db_pool.fetchval("SELECT count(*) FROM tick_data WHERE ltp < 1000") == 37
    assert await db_pool.fetchval("SELECT last_id FROM ingest_offsets WHERE stream = 'dl'") == "9-0"
    assert await db_pool.fetchval(queries.FOLD_VOLUME_LOG) >= 1  # the commit's state, from the log
    assert await db_pool.fetchval("SELECT volume FROM tick_volume_state WHERE instrument_id = $1", a) == 400


async def test_commits_append_the_volume_state_to_a_log_that_a_fold_takes_into_the_table(
    db_pool: asyncpg.Pool,
) -> None:
    await reset_market_data(db_pool)
    [a, b] = await make_instruments(db_pool, 2, prefix="LOG")
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    writer = await DirectWriter.open(db_pool)
    await writer.write(
        [tick(a, t0, volume=100, qty=1), tick(b, t0, volume=50, qty=1)], offset=StreamOffset("l", "1-0")
    )
    await writer.write(
        [tick(a, t0 + timedelta(seconds=1), volume=160, qty=1)], offset=StreamOffset("l", "2-0", expect="1-0")
    )
    # one log row per commit, nothing upserted per instrument
    assert await db_pool.fetchval("SELECT count(*) FROM tick_volume_log") == 2
    assert await db_pool.fetchval("SELECT count(*) FROM tick_volume_state") == 0
    async with db_pool.acquire() as conn:
        from_log = await ticks.load_volume_state(conn)
        assert {r[0] for r in await ticks.load_volume_state(conn, [b])} == {b}
    # a commit still in flight when the fold runs keeps its row for the next fold
    day = ist_day(to_us(t0))
    async with db_pool.acquire() as conn, conn.transaction():
        await ticks.append_volume_log(conn, "m", [(b, day, 70, 1, 1, 1)])
        await conn.execute(queries.COMMIT_OFFSET, "m", "1-0", None, [], [], [], [])
        assert await db_pool.fetchval(queries.FOLD_VOLUME_LOG) == 2  # a and b, each its latest row
    assert await db_pool.fetchval("SELECT count(*) FROM tick_volume_log") == 1
    state = {r[0]: r[2] for r in await db_pool.fetch("SELECT * FROM tick_volume_state")}
    assert state == {a: 160, b: 50}
    tracker, again = VolumeTracker(), VolumeTracker()
    tracker.load(from_log)
    async with db_pool.acquire() as conn:
        again.load(await ticks.load_volume_state(conn))
    assert tracker.state[a] == again.state[a] and tracker.state[a].volume == 160
    assert again.state[b].volume == 70  # the later baseline, from the log over the table


async def test_a_writer_loads_an_instruments_volume_state_when_a_batch_first_names_it(
    db_pool: asyncpg.Pool,
) -> None:
    await reset_market_data(db_pool)
    a, b, c = await make_instruments(db_pool, 3, prefix="LAZY")
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    first = await DirectWriter.open(db_pool)
    await first.write(
        [tick(a, t0, volume=100, qty=1), tick(b, t0, volume=50, qty=1), tick(c, t0, volume=7, qty=1)]
    )
    # a writer taking over: nothing read at its start, then only what its batches name, once each
    taker = await DirectWriter.open(db_pool)
    assert taker.preparer.tracker.instruments() == set() and taker.preparer.state_loads == 0
    await taker.write([tick(a, t0 + timedelta(seconds=1), volume=130, qty=1)])
    await taker.write(
        [
            tick(a, t0 + timedelta(seconds=2), volume=140, qty=1),
            tick(b, t0 + timedelta(seconds=2), volume=50, qty=1),
        ]
    )
    assert taker.preparer.state_loads == 2 and taker.preparer.tracker.instruments() == {a, b}
    await taker.write([tick(a, t0 + timedelta(seconds=3), volume=141, qty=1)])
    assert taker.preparer.state_loads == 2
    deltas = await db_pool.fetch(
        "SELECT instrument_id, volume_delta FROM tick_data WHERE instrument_id = ANY($1) AND time > $2 ORDER BY time",
        [a, b],
        t0,
    )
    # the taker's increments, each against the committed baseline (b's same volume: no new trade)
    assert [(r[0], r[1]) for r in deltas] == [(a, 30), (a, 10), (a, 1)]
