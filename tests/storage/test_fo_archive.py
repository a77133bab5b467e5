"""The permanent F&O archive on plain PostgreSQL (migration 0013): a contract aged past every
retention horizon keeps its 1m candles (and the series read from them at every timeframe), its
broker 1m history and, when asked, its ticks; a cash instrument beside it is pruned as before."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.storage.helpers import refresh_all, reset_market_data
from trading_helper.export.run import build_request
from trading_helper.export.source import csv_chunks
from trading_helper.models import Instrument
from trading_helper.storage.instruments import lookup_tokens, sync_instruments
from trading_helper.timeframes import Timeframe

pytestmark = pytest.mark.flavour("postgres", "TimescaleDB's retention is checked in the Node engine")

AGED = timedelta(days=400)  # past 1m (30 days), 5m (90), 15m (6 months) and 1h (1 year) retention


async def _instruments(pool: asyncpg.Pool, tag: str) -> tuple[int, int]:
    """An expired NFO future and an NSE share, mapped for the simulator."""
    items = [
        Instrument(
            "NFO",
            f"{tag}FUT",
            "NFO-FUT",
            "FUT",
            expiry=date.today(),
            lot_size=50,
            broker_ids={"sim": f"{tag}F"},
        ),
        Instrument("NSE", f"{tag}EQ", "NSE", "EQ", broker_ids={"sim": f"{tag}E"}),
    ]
    async with pool.acquire() as conn:
        await sync_instruments(conn, "sim", items, mark_expired=False)
        found = await lookup_tokens(conn, "sim", [f"{tag}F", f"{tag}E"])
        await conn.execute("UPDATE instruments SET expired = true WHERE id = $1", found[f"{tag}F"])
    return found[f"{tag}F"], found[f"{tag}E"]


async def _record(pool: asyncpg.Pool, ids: tuple[int, ...], start: datetime) -> None:
    """Ten minutes of ticks for each instrument, fully captured, rolled up into candles; a broker
    1m candle just before them."""
    await pool.execute(
        "SELECT ensure_tick_partitions($1::timestamptz, $1::timestamptz + interval '1 hour')", start
    )
    for n, iid in enumerate(ids):
        await pool.execute(
            "INSERT INTO tick_data (time, instrument_id, ltp, volume_delta, open_interest, received_at) "
            "SELECT $2::timestamptz + g * interval '3 seconds', $1, 100 + $3 + (g % 11) * 0.05, 1 + g % 4, "
            "NULLIF(g % 5, 0) * 10, $2::timestamptz + g * interval '3 seconds' FROM generate_series(0, 199) g",
            iid,
            start,
            n * 10,
        )
        await pool.execute(
            "INSERT INTO live_coverage (instrument_id, broker, period, open) VALUES ($1, 'sim', tstzrange($2, $3), false)",
            iid,
            start,
            start + timedelta(minutes=10),
        )
        await pool.execute(
            "INSERT INTO broker_candles (instrument_id, timeframe, bucket, open, high, low, close, volume, source) "
            "VALUES ($1, '1m', $2, 1, 2, 1, 2, 5, 'sim')",
            iid,
            start - timedelta(minutes=1),
        )
    await refresh_all(pool)


async def _series(pool: asyncpg.Pool, iid: int, start: datetime) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for tf in Timeframe:
        lo = tf.bucket_start(start) - tf.width
        rows = await pool.fetch(
            "SELECT * FROM read_candles($1, $2, $3, $4)",
            iid,
            tf.value,
            lo,
            lo + 3 * tf.width + timedelta(hours=1),
        )
        out[tf.value] = [tuple(r) for r in rows]
    return out


async def _tick_rows(pool: asyncpg.Pool, iid: int, start: datetime) -> int:
    req = await build_request(
        pool,
        "ticks",
        [f"id:{iid}"],
        interval="1m",
        start=start - timedelta(hours=1),
        end=start + timedelta(hours=1),
        zone="utc",
        broker=None,
    )
    return sum([c.count(b"\n") async for c in csv_chunks(pool, req)])


async def test_an_expired_contract_keeps_its_candles_past_every_retention(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    start = datetime.now().astimezone().replace(second=0, microsecond=0) - timedelta(hours=2)

    # archive off: the contract's candles go with the retention table, like any other (the check
    # below would pass vacuously otherwise)
    await db_pool.execute("UPDATE archive_policy SET candles = false, ticks = 'drop'")
    fut0, _ = await _instruments(db_pool, "ARCOFF")
    await _record(db_pool, (fut0,), start)
    assert (await _series(db_pool, fut0, start))["1m"]
    await db_pool.execute("SELECT apply_retention($1)", start + AGED)
    assert (await _series(db_pool, fut0, start))["1m"] == []

    # archive on (the default), ticks kept
    await db_pool.execute("UPDATE archive_policy SET candles = true, ticks = 'keep'")
    fut, cash = await _instruments(db_pool, "ARCON")
    await _record(db_pool, (fut, cash), start)
    before = {iid: await _series(db_pool, iid, start) for iid in (fut, cash)}
    assert all(len(before[fut][tf]) >= 2 for tf in ("1m", "5m")) and before[fut]["1d"]
    assert {r[-1] for r in before[fut]["1m"]} == {"live", "broker"}
    ticks = await _tick_rows(db_pool, fut, start)
    assert ticks == 200

    await db_pool.execute("SELECT apply_retention($1)", start + AGED)
    after = {iid: await _series(db_pool, iid, start) for iid in (fut, cash)}
    assert await db_pool.fetchval("SELECT count(*) FROM tick_data WHERE instrument_id = $1", fut) == 0
    assert await db_pool.fetchval("SELECT count(*) FROM candles_1m_mat WHERE instrument_id = $1", fut) == 0
    # the future: every timeframe reads as before (1d is never pruned anyway), its ticks from the archive
    assert after[fut] == before[fut]
    assert await _tick_rows(db_pool, fut, start) == ticks
    # the share: pruned by the table (its 1d level is today's forming bucket here, rolled up from
    # the 1h level on read, so it goes too; in service the day is materialised and kept forever)
    assert all(before[cash][tf] and not after[cash][tf] for tf in ("1m", "5m", "15m", "1h"))
    assert await _tick_rows(db_pool, cash, start) == 0

    # running it again changes nothing
    await db_pool.execute("SELECT apply_retention($1)", start + AGED + timedelta(days=1))
    assert await _series(db_pool, fut, start) == before[fut]
