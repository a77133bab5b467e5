"""Broker sequences through our parsers and the writer give exactly the candles of an independent
computation (tests.oracle), on plain PostgreSQL and on TimescaleDB (the Node engine).

* Kite full mode: packets built with the fake Kite's packer (``exchange_timestamp`` beside
  ``last_trade_time``), an NSE stock with its pre-open match and an MCX contract from 09:00, depth
  updates that repeat the last trade, two trades stamped in one second, a drop and a reconnect
  whose snapshot carries what was traded meanwhile, and a writer restart.
* Fyers: the snapshot at subscribe time of an illiquid stock whose last trade was 40 minutes
  earlier, then incremental updates (trades and quote-only changes), a reconnect with a new
  snapshot of the same last trade.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg

from tests import oracle
from tests.fakes.fyers_server import datafeed_frame, snapshot_record, update_record
from tests.fakes.kite_server import Quote, pack_frame, pack_packet
from tests.ingest.direct_writer import DirectWriter, WriteResult, chunks_of
from tests.storage.candles import refresh_candles
from tests.storage.helpers import make_instruments, reset_market_data
from tests.storage.test_candles_property import database_candles
from tests.storage.test_timescale_engine import assert_same_candles, wide_window
from tests.timescale.engine import TimescaleEngine
from trading_helper.brokers.fyers import constants as FC
from trading_helper.brokers.fyers.parsing import HsmDecoder, state_to_tick
from trading_helper.brokers.kite.parsing import kite_frame_to_packets, kite_packet_to_tick
from trading_helper.candles.read import read_candles
from trading_helper.ingest.batch import VolumeReset, build_batch
from trading_helper.ingest.volume import from_us, to_us
from trading_helper.ingest.volume_book import VolumeBook
from trading_helper.models import Tick
from trading_helper.storage.ticks import QUOTE_COLUMNS, TICK_COLUMNS
from trading_helper.timeframes import IST, Timeframe

Event = Tick | VolumeReset
NSE_TOKEN, MCX_TOKEN = 738561, (209_007 << 8) | 7


def trading_day() -> date:
    return (datetime.now(IST) - timedelta(days=1)).date()


def ist(day: date, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm, ss), IST)


def to_oracle(events: list[Event]) -> list[Tick | oracle.CaptureStart]:
    return [
        oracle.CaptureStart(e.instrument_ids, from_us(e.at_us))
        if isinstance(e, VolumeReset) and e.at_us
        else e
        for e in events
    ]


# -- Kite ---------------------------------------------------------------------------------------


def kite_sequence(ids: dict[int, int]) -> list[Event]:
    """Full-mode packets for two instruments, parsed by our parser, with the capture markers the
    receiver writes on every connect."""
    rng = random.Random(10)
    day = trading_day()
    received = datetime.now(UTC)
    # the tape: (trade second, price, qty) per token
    tape: dict[int, list[tuple[int, float, int]]] = {}
    for token, first, pre_open in ((NSE_TOKEN, ist(day, 9, 15), 4_200), (MCX_TOKEN, ist(day, 9, 0), 0)):
        t, price, trades = int(first.timestamp()), 250.0, []
        if pre_open:
            trades.append((int(ist(day, 9, 7, 58).timestamp()), 251.0, pre_open))
        while t < int(ist(day, 9, 45).timestamp()):
            price = round(price + rng.choice((-0.1, -0.05, 0, 0.05, 0.1)), 2)
            trades.append((t, price, rng.choice((1, 5, 25, 100))))
            t += rng.choice((0, 1, 2, 3, 7))  # 0: two trades stamped in the same second
        tape[token] = trades
    yesterday_close = {
        NSE_TOKEN: (int(ist(day - timedelta(days=1), 15, 29, 59).timestamp()), 249.0, 90_000),
        MCX_TOKEN: (int(ist(day - timedelta(days=1), 23, 29, 59).timestamp()), 249.5, 60_000),
    }
    connected = [(ist(day, 9, 5), ist(day, 9, 31, 10)), (ist(day, 9, 34, 40), ist(day, 9, 50))]
    events: list[Event] = []

    def packet(
        token: int, exchange_s: int, trade: tuple[int, float, int], volume: int, bid_shift: float
    ) -> Event:
        q = Quote(
            token=token,
            last_price=trade[1],
            last_quantity=trade[2],
            average_price=trade[1],
            volume=volume,
            last_trade_time=trade[0],
            exchange_timestamp=exchange_s,
            oi=0,
            bids=[(10, trade[1] - 0.05 - bid_shift, 1)],
            asks=[(12, trade[1] + 0.05, 1)],
        )
        [p] = kite_frame_to_packets(pack_frame([pack_packet(q, "full")])).packets
        return kite_packet_to_tick(p, ids[token], received)

    updates: list[tuple[int, int, Event | None]] = []  # (second, order, event)
    for token, trades in tape.items():
        cumulative, last, last_volume = 0, yesterday_close[token][:3], yesterday_close[token][2]
        moments = [(s, n) for n, (s, _, _) in enumerate(trades)]
        pos = 0
        for start, end in connected:
            updates.append((int(start.timestamp()), 0, VolumeReset(frozenset({ids[token]}), to_us(start))))
            while pos < len(moments) and moments[pos][0] < start.timestamp():  # traded while away
                cumulative += trades[pos][2]
                last, last_volume = trades[pos], cumulative
                pos += 1
            updates.append(
                (int(start.timestamp()), 1, packet(token, int(start.timestamp()), last, last_volume, 0))
            )
            while pos < len(moments) and moments[pos][0] < end.timestamp():
                cumulative += trades[pos][2]
                last, last_volume = trades[pos], cumulative
                lag = rng.choice((0, 0, 1))
                updates.append((last[0] + lag, 2, packet(token, last[0] + lag, last, cumulative, 0)))
                if rng.random() < 0.4:  # the book moves, no trade: same last trade, same volume
                    updates.append((last[0] + lag, 3, packet(token, last[0] + lag, last, cumulative, 0.05)))
                pos += 1
    updates.sort(key=lambda u: (u[0], u[1]))
    events = [e for _, _, e in updates if e is not None]
    return events


# -- Fyers --------------------------------------------------------------------------------------


def fyers_sequence(iid: int) -> list[Event]:
    day = trading_day()
    received = datetime.now(UTC)
    names = FC.SCRIP_FIELDS
    topic = "sf|nse_cm|2885"
    state = {
        "ltp": 151_00,
        "vol_traded_today": 80_000,
        "last_traded_time": int(ist(day, 9, 20, 11).timestamp()),
        "exch_feed_time": 0,
        "bid_size": 40,
        "ask_size": 30,
        "bid_price": 150_95,
        "ask_price": 151_05,
        "last_traded_qty": 15,
        "avg_trade_price": 150_80,
        "OI": 0,
    }
    events: list[Event] = []

    def snapshot(decoder: HsmDecoder, now: datetime) -> None:
        state["exch_feed_time"] = int(now.timestamp())
        values = [state.get(n, 0) for n in names]
        frame = datafeed_frame(1, [snapshot_record(7, topic, values, 1, 2, "NSE", "2885", "SBIN-EQ")])
        emit(decoder, frame)

    def change(decoder: HsmDecoder, **fields: int) -> None:
        state.update(fields)
        values = [fields.get(n, FC.NO_VALUE) for n in names]
        emit(decoder, datafeed_frame(2, [update_record(7, values)]))

    def emit(decoder: HsmDecoder, frame: bytes) -> None:
        for st in decoder.decode(frame).changed:
            tick = state_to_tick(st, iid, received)
            assert tick is not None
            events.append(tick)

    first = ist(day, 10, 0, 0)  # subscribed 40 minutes after the last trade
    events.append(VolumeReset(frozenset({iid}), to_us(first)))
    decoder = HsmDecoder()
    snapshot(decoder, first)
    s = int(first.timestamp())
    change(decoder, bid_price=150_90, exch_feed_time=s + 3)  # quote only
    change(
        decoder,
        ltp=151_10,
        vol_traded_today=80_025,
        last_traded_time=s + 4,
        exch_feed_time=s + 4,
        last_traded_qty=25,
    )
    change(decoder, ask_size=55, exch_feed_time=s + 5)  # quote only
    change(
        decoder,
        ltp=151_05,
        vol_traded_today=80_125,
        last_traded_time=s + 61,
        exch_feed_time=s + 62,
        last_traded_qty=100,
    )
    change(
        decoder,
        ltp=151_20,
        vol_traded_today=80_135,
        last_traded_time=s + 61,
        exch_feed_time=s + 62,
        last_traded_qty=10,
    )  # a second trade stamped in the same second
    # a reconnect: a new decoder, a new snapshot of the same last trade (no new trade)
    again = first + timedelta(minutes=3)
    events.append(VolumeReset(frozenset({iid}), to_us(again)))
    decoder = HsmDecoder()
    snapshot(decoder, again)
    change(
        decoder,
        ltp=151_00,
        vol_traded_today=80_335,
        last_traded_time=s + 200,
        exch_feed_time=s + 200,
        last_traded_qty=200,
    )
    return events


# -- the two flavours ---------------------------------------------------------------------------


async def write_in_batches(pool: asyncpg.Pool, events: list[Event]) -> WriteResult:
    """Three batches, the writer restarting (a new process) before the last."""
    total = WriteResult()
    writer = await DirectWriter.open(pool)
    cuts = [0, len(events) // 3, 2 * len(events) // 3, len(events)]
    for n, (a, b) in enumerate(itertools.pairwise(cuts)):
        if n == 2:
            writer = await DirectWriter.open(pool)
        result = await writer.write(events[a:b])
        total.written += result.written
        total.rejected.update(result.rejected)
    return total


async def check_postgres(pool: asyncpg.Pool, events: list[Event]) -> None:
    expected_trades = oracle.stored_trades(to_oracle(events))
    ticks = [e for e in events if isinstance(e, Tick)]
    result = await write_in_batches(pool, events)
    assert result.written == len(ticks) and not result.rejected
    assert await pool.fetchval("SELECT count(*) FROM tick_data") == len(expected_trades)
    assert await pool.fetchval("SELECT count(*) FROM quote_updates") == len(ticks) - len(expected_trades)
    assert await pool.fetchval("SELECT count(*) FROM tick_data WHERE exchange_time IS NULL") == 0
    async with pool.acquire() as conn:
        await refresh_candles(conn)
    assert_same_candles(await database_candles(pool), oracle.candles(expected_trades))


def check_timescale(engine: TimescaleEngine, events: list[Event], ids: list[int]) -> None:
    """The rows the writer builds (its COPY payload), loaded into the TimescaleDB engine."""
    engine.reset()
    expected_trades = oracle.stored_trades(to_oracle(events))
    batch = build_batch(chunks_of(events), VolumeBook(), set(ids), to_us(datetime.now(UTC)))
    rows, quotes = batch.write.trades.rows.rows(), batch.write.quotes.rows.rows()

    def as_json(columns: tuple[str, ...], row: tuple[object, ...]) -> dict[str, Any]:
        return {c: v.isoformat() if isinstance(v, datetime) else v for c, v in zip(columns, row, strict=True)}

    assert engine.load([as_json(TICK_COLUMNS, r) for r in rows]) == len(expected_trades)
    engine.query(
        "INSERT INTO quote_updates SELECT * FROM json_populate_recordset(NULL::quote_updates, $1::json)",
        [as_json(QUOTE_COLUMNS, r) for r in quotes],
    )
    assert engine.query("SELECT count(*) FROM quote_updates") == [[len(quotes)]]
    engine.refresh(*wide_window(expected_trades))
    assert_same_candles(engine.candles(), oracle.candles(expected_trades))


async def test_kite_full_mode_sequence_gives_the_oracle_candles(
    db_pool: asyncpg.Pool, timescale_engine: TimescaleEngine
) -> None:
    await reset_market_data(db_pool)
    nse, mcx = await make_instruments(db_pool, 2, prefix="KSEQ")
    events = kite_sequence({NSE_TOKEN: nse, MCX_TOKEN: mcx})
    ticks = [e for e in events if isinstance(e, Tick)]
    assert all(t.trade_ts is not None for t in ticks) and any(t.trade_ts != t.exchange_ts for t in ticks)
    await check_postgres(db_pool, events)
    check_timescale(timescale_engine, events, [nse, mcx])
    # the snapshots of yesterday's close at 09:05 opened no candle of yesterday
    day = trading_day()
    assert await db_pool.fetchval("SELECT count(*) FROM tick_data WHERE time < $1", ist(day, 0, 15)) == 0
    # the NSE pre-open match is credited in full; the day's volume is exact for both
    total = {
        r[0]: r[1]
        for r in await db_pool.fetch("SELECT instrument_id, sum(volume_delta) FROM tick_data GROUP BY 1")
    }
    last = {t.instrument_id: t.volume for t in ticks}
    assert total == last


async def test_fyers_snapshot_then_updates_gives_the_oracle_candles(
    db_pool: asyncpg.Pool, timescale_engine: TimescaleEngine
) -> None:
    await reset_market_data(db_pool)
    [iid] = await make_instruments(db_pool, 1, prefix="FSEQ")
    events = fyers_sequence(iid)
    await check_postgres(db_pool, events)
    check_timescale(timescale_engine, events, [iid])
    day = trading_day()
    # the snapshot 40 minutes after the last trade opened no candle; the volume since it is exact
    rows = [
        tuple(r)
        for r in await db_pool.fetch(
            "SELECT time, exchange_time, ltp, volume_delta FROM tick_data ORDER BY time"
        )
    ]
    s = ist(day, 10, 0)
    assert rows == [
        (s + timedelta(seconds=4), s + timedelta(seconds=4), 151.1, 25),
        (s + timedelta(seconds=61), s + timedelta(seconds=62), 151.05, 100),
        (s + timedelta(seconds=61, microseconds=1), s + timedelta(seconds=62), 151.2, 10),
        (s + timedelta(seconds=200), s + timedelta(seconds=200), 151.0, 200),
    ]


async def test_the_bucket_credited_with_unseen_volume_is_partial(db_pool: asyncpg.Pool) -> None:
    """A drop from 10:00:30 to 10:05:10: the reconnect snapshot's trade (10:04:40) carries what was
    traded meanwhile, and its bucket, holding time we did not capture, is `partial`."""
    await reset_market_data(db_pool)
    [iid] = await make_instruments(db_pool, 1, prefix="PART")
    day = trading_day()
    await db_pool.execute(
        "INSERT INTO market_sessions (calendar, day, session) VALUES ('NSE', $1, tstzrange($2, $3)) "
        "ON CONFLICT DO NOTHING",
        day,
        ist(day, 9, 15),
        ist(day, 15, 30),
    )
    await db_pool.execute(
        "INSERT INTO live_coverage (instrument_id, broker, period, open) VALUES "
        "($1, 'sim', tstzrange($2, $3), false), ($1, 'sim', tstzrange($4, $5), false)",
        iid,
        ist(day, 9, 55),
        ist(day, 10, 0, 30),
        ist(day, 10, 5, 10),
        ist(day, 10, 20),
    )

    def trade(at: datetime, exchange: datetime, volume: int, qty: int) -> Tick:
        return Tick(
            instrument_id=iid,
            exchange_ts=exchange,
            received_ts=datetime.now(UTC),
            last_price=100.0,
            last_quantity=qty,
            volume=volume,
            trade_ts=at,
        )

    events: list[Event] = [VolumeReset(frozenset({iid}), to_us(ist(day, 9, 55)))]
    events += [trade(ist(day, 9, 56 + n), ist(day, 9, 56 + n), 1000 + 10 * n, 10) for n in range(4)]
    events += [
        VolumeReset(frozenset({iid}), to_us(ist(day, 10, 5, 10))),
        trade(ist(day, 10, 4, 40), ist(day, 10, 5, 10), 5000, 50),  # the snapshot
        trade(ist(day, 10, 6, 1), ist(day, 10, 6, 1), 5010, 10),
    ]
    writer = await DirectWriter.open(db_pool)
    await writer.write(events)
    async with db_pool.acquire() as conn:
        await refresh_candles(conn)
        candles = await read_candles(conn, iid, Timeframe.M1, ist(day, 9, 50), ist(day, 10, 10))
    by_bucket = {c.bucket: (c.volume, c.source) for c in candles}
    assert by_bucket == {
        ist(day, 9, 56): (10, "live"),
        ist(day, 9, 57): (10, "live"),
        ist(day, 9, 58): (10, "live"),
        ist(day, 9, 59): (10, "live"),
        ist(day, 10, 4): (5000 - 1030, "partial"),
        ist(day, 10, 6): (10, "live"),
    }
