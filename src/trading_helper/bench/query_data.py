"""A realistic candle dataset for ``trading-helper bench query``, on either schema flavour.

For N instruments over the last D calendar days (their NSE trading days):

- the older two thirds of the days come from the broker: 1m and 15m rows in ``broker_candles``
  with their ``fetch_coverage``;
- the newer third was captured live: 1m candles in ``candles_1m_mat`` (the rollup's table; the
  ticks of days past their retention are gone, as in production), rolled up to 5m..1d by the
  schema's own ``candle_rebuild``, with ``live_coverage`` that has a 10-minute hole each day
  (11:00-11:10 IST, a reconnect) which the broker filled (1m rows and their fetch coverage);
  every third instrument is illiquid: no trade in about 40% of its minutes;
- a year of broker 1d candles per instrument.

Rows go in with binary COPY, per batch of instruments, with the two large tables' indexes built
after the load.

On TimescaleDB the live days arrive as production's do: as ticks in ``tick_data`` (four per
captured minute: open, high, low, close, the minute's volume split between them), aggregated by
the continuous aggregates, which are then refreshed level by level over the live days
(``CALL refresh_continuous_aggregate``, as the service's catch-up does). Same candles, same JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import asyncpg

from trading_helper.brokers.sim import sim_instruments
from trading_helper.candles.calendar import SessionLoader, year_sessions
from trading_helper.storage import queries, sql_candles
from trading_helper.storage.db import Connection
from trading_helper.storage.instruments import lookup_tokens, sync_instruments
from trading_helper.storage.migrate import current_flavour
from trading_helper.timeframes import IST, Timeframe

BATCH_INSTRUMENTS = 50
HOLE = (11 * 60, 11 * 60 + 10)  # minutes of the IST day without live capture
_OHLCV_OI = ("open", "high", "low", "close", "volume", "open_interest")
BROKER_COLUMNS = ("instrument_id", "timeframe", "bucket", *_OHLCV_OI, "source")
MAT_COLUMNS = ("bucket", "instrument_id", *_OHLCV_OI, "tick_count")
TICK_COLUMNS = ("time", "instrument_id", "ltp", "volume_delta", "received_at")
#: where in its minute each of a live bar's four ticks (open, high, low, close) falls
_TICK_AT = (timedelta(seconds=1), timedelta(seconds=15), timedelta(seconds=30), timedelta(seconds=45))


@dataclass(slots=True)
class Dataset:
    instrument_ids: list[int]
    broker_days: list[date]
    live_days: list[date]
    year_days: list[date]
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def days(self) -> list[date]:
        return self.broker_days + self.live_days


def _session(day: date) -> tuple[datetime, datetime]:
    return datetime(day.year, day.month, day.day, 9, 15, tzinfo=IST), datetime(
        day.year, day.month, day.day, 15, 30, tzinfo=IST
    )


def trading_days(first: date, last: date) -> list[date]:
    out: list[date] = []
    for year in range(first.year, last.year + 1):
        out.extend(d for d, _, _ in year_sessions("NSE", year) if first <= d <= last)
    return out


def _price(iid: int, k: int) -> float:
    """A deterministic wandering price for instrument ``iid`` at step ``k``."""
    base = 100.0 + (iid * 37) % 2000
    return round(base + 5 * math.sin(k / 97 + iid) + (k % 17) * 0.05, 2)


def _bars(
    iid: int, starts: list[datetime], step: int
) -> Iterator[tuple[datetime, float, float, float, float, int]]:
    for ts in starts:
        k = int(ts.timestamp()) // 60
        o = _price(iid, k)
        c = _price(iid, k + step)
        yield ts, o, max(o, c) + 0.1, min(o, c) - 0.1, c, 100 + (k * iid) % 900


def _minutes(day: date, step: int) -> list[datetime]:
    start, end = _session(day)
    n = int((end - start).total_seconds()) // 60 // step
    return [start + timedelta(minutes=i * step) for i in range(n)]


def _in_hole(ts: datetime) -> bool:
    local = ts.astimezone(IST)
    return HOLE[0] <= local.hour * 60 + local.minute < HOLE[1]


def _broker_rows(iid: int, data: Dataset) -> Iterator[tuple[object, ...]]:
    for day in data.broker_days:
        for tf, step in ((Timeframe.M1, 1), (Timeframe.M15, 15)):
            for ts, o, h, lo, c, v in _bars(iid, _minutes(day, step), step):
                yield iid, tf.value, ts, o, h, lo, c, v * step, None, "sim"
    for day in data.live_days:  # what the broker gave for the hole
        for ts, o, h, lo, c, v in _bars(iid, [t for t in _minutes(day, 1) if _in_hole(t)], 1):
            yield iid, "1m", ts, o, h, lo, c, v, None, "sim"
    for day in data.year_days:
        ts = datetime(day.year, day.month, day.day, 0, 15, tzinfo=IST)
        o, c = _price(iid, day.toordinal()), _price(iid, day.toordinal() + 1)
        yield iid, "1d", ts, o, max(o, c) + 2, min(o, c) - 2, c, 100_000 + iid, None, "sim"


def _live_bars(iid: int, data: Dataset) -> Iterator[tuple[datetime, float, float, float, float, int]]:
    illiquid = iid % 3 == 0
    for day in data.live_days:
        for ts, o, h, lo, c, v in _bars(iid, _minutes(day, 1), 1):
            if _in_hole(ts) or (illiquid and (int(ts.timestamp()) // 60 * 7 + iid) % 10 < 4):
                continue
            yield ts, o, h, lo, c, v


def _live_rows(iid: int, data: Dataset) -> Iterator[tuple[object, ...]]:
    for ts, o, h, lo, c, v in _live_bars(iid, data):
        yield ts, iid, o, h, lo, c, v, None, 1 + v % 20


def live_ticks(iid: int, data: Dataset) -> Iterator[tuple[object, ...]]:
    """The live 1m bars of ``iid`` as ticks (TICK_COLUMNS) that aggregate back to exactly them."""
    for ts, o, h, lo, c, v in _live_bars(iid, data):
        prices = (o, h, lo, c)
        share = v // 4
        for n, offset in enumerate(_TICK_AT):
            yield ts + offset, iid, prices[n], share if n < 3 else v - 3 * share, ts + offset


async def _coverage(conn: Connection, ids: list[int], data: Dataset) -> None:
    fetch: list[tuple[object, ...]] = []
    live: list[tuple[object, ...]] = []
    for iid in ids:
        if data.broker_days:
            first, _ = _session(data.broker_days[0])
            _, last = _session(data.broker_days[-1])
            fetch += [(iid, "1m", first, last), (iid, "15m", first, last)]
        first_d = datetime(
            data.year_days[0].year, data.year_days[0].month, data.year_days[0].day, 0, 15, tzinfo=IST
        )
        fetch.append(
            (iid, "1d", first_d, first_d + timedelta(days=(data.year_days[-1] - data.year_days[0]).days + 1))
        )
        for day in data.live_days:
            start, end = _session(day)
            hole_from = datetime(day.year, day.month, day.day, HOLE[0] // 60, HOLE[0] % 60, tzinfo=IST)
            hole_to = hole_from + timedelta(minutes=HOLE[1] - HOLE[0])
            live += [
                (iid, start - timedelta(minutes=5), hole_from),
                (iid, hole_to, end + timedelta(minutes=5)),
            ]
            fetch.append((iid, "1m", hole_from, hole_to))
    await conn.executemany(sql_candles.BENCH_FETCH_COVERAGE, fetch)
    await conn.executemany(sql_candles.BENCH_LIVE_COVERAGE, live)


async def load_dataset(pool: asyncpg.Pool, instrument_ids: list[int], days: int, today: date) -> Dataset:
    """Load the dataset for ``instrument_ids`` over the ``days`` calendar days before ``today``."""
    last = today - timedelta(days=1)
    window = trading_days(last - timedelta(days=days - 1), last)
    split = max(1, len(window) * 2 // 3) if len(window) > 1 else len(window)
    data = Dataset(
        instrument_ids, window[:split], window[split:], trading_days(last - timedelta(days=364), last)
    )
    sessions = SessionLoader()
    await sessions.ensure(pool, "NSE", range(last.year - 1, today.year + 1))
    async with pool.acquire() as conn:
        plain = await current_flavour(conn) == "postgres"
        # bulk load without the two big indexes, then build them once
        await conn.execute(sql_candles.DROP_BROKER_CANDLES_PKEY)
        if plain:
            await conn.execute(sql_candles.DROP_MAT_PKEY)
            await conn.execute(sql_candles.DROP_MAT_BUCKET_INDEX)
        broker = live = 0
        for n in range(0, len(instrument_ids), BATCH_INSTRUMENTS):
            ids = instrument_ids[n : n + BATCH_INSTRUMENTS]
            rows = [r for iid in ids for r in _broker_rows(iid, data)]
            await conn.copy_records_to_table("broker_candles", records=rows, columns=BROKER_COLUMNS)
            broker += len(rows)
            mats = [r for iid in ids for r in _live_rows(iid, data)]
            if plain:
                await conn.copy_records_to_table("candles_1m_mat", records=mats, columns=MAT_COLUMNS)
            else:
                ticks = [t for iid in ids for t in live_ticks(iid, data)]
                await conn.copy_records_to_table("tick_data", records=ticks, columns=TICK_COLUMNS)
            live += len(mats)
            await _coverage(conn, ids, data)
        await conn.execute(sql_candles.ADD_BROKER_CANDLES_PKEY)
        if plain:
            await conn.execute(sql_candles.ADD_MAT_PKEY)
            await conn.execute(sql_candles.CREATE_MAT_BUCKET_INDEX)
        if data.live_days:
            start, _ = _session(data.live_days[0])
            _, end = _session(data.live_days[-1])
            for tf in Timeframe:
                if plain and tf is not Timeframe.M1:
                    await conn.execute(
                        sql_candles.REBUILD_CANDLES,
                        tf.value,
                        start - timedelta(days=1),
                        end + timedelta(days=1),
                    )
                elif not plain:  # whole UTC days with margin: every level's buckets (timescaledb #9308)
                    await conn.execute(
                        queries.REFRESH_CONTINUOUS_AGGREGATE,
                        tf.relation,
                        (start - timedelta(days=2)).timestamp(),
                        (end + timedelta(days=2)).timestamp(),
                        False,
                    )
        await conn.execute(sql_candles.ANALYZE)
    data.rows = {"broker_candles": broker, "live_1m_candles": live}
    return data


async def load_sim_dataset(pool: asyncpg.Pool, instruments: int, days: int) -> tuple[str, Dataset]:
    """``instruments`` simulator instruments synced and the dataset of the ``days`` calendar days
    before today loaded for them; returns the schema flavour and the dataset."""
    async with pool.acquire() as conn:
        flavour = await current_flavour(conn)
        items = sim_instruments(instruments)
        await sync_instruments(conn, "sim", items)
        found = await lookup_tokens(conn, "sim", [i.broker_ids["sim"] for i in items])
    data = await load_dataset(pool, sorted(found.values()), days, datetime.now(IST).date())
    return str(flavour), data
