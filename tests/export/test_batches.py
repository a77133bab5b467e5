"""An export of more instruments than one COPY reads (``export/source.py``: BATCH_INSTRUMENTS) has
every instrument's rows whole, in the order asked, each in time order: ticks (a future's archived
ticks first, then ``tick_data`` from where the archive ends, none twice) and candles over more than
one read window (the merged series of ``read_candles`` over the whole range)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from tests.storage.helpers import make_instruments, refresh_all
from trading_helper.export.columns import names
from trading_helper.export.files import read_export
from trading_helper.export.run import build_request, export_stream
from trading_helper.export.source import BATCH_INSTRUMENTS
from trading_helper.models import Instrument
from trading_helper.storage import sql_export
from trading_helper.storage.instruments import lookup_tokens, sync_instruments
from trading_helper.timeframes import Timeframe

DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
ARCHIVED_UPTO = DAY + timedelta(hours=6)  # the synthetic session runs 03:45-10:00 UTC
TICK_COLUMNS = ", ".join(names("ticks")[1:])  # time, exchange_time, ltp ...
AFTER_TIME = ", ".join(names("ticks")[2:])


async def _instruments(pool: asyncpg.Pool, tag: str) -> dict[int, str]:
    """BATCH_INSTRUMENTS + 3 shares and a future with a day of ticks each: id -> reference."""
    shares = await make_instruments(pool, BATCH_INSTRUMENTS + 3, prefix=f"{tag}EQ")
    fut = Instrument(
        "NFO", f"{tag}24FUT", "NFO-FUT", "FUT", expiry=date.today(), broker_ids={"sim": f"{tag}F"}
    )
    async with pool.acquire() as conn:
        await sync_instruments(conn, "sim", [fut], mark_expired=False)
        fut_id = (await lookup_tokens(conn, "sim", [f"{tag}F"]))[f"{tag}F"]
    refs = {i: f"NSE:{tag}EQ{n}" for n, i in enumerate(shares)} | {fut_id: f"NFO:{tag}24FUT"}
    await pool.execute("SELECT ensure_tick_partitions($1::timestamptz, $1::timestamptz)", DAY)
    await pool.execute(sql_export.SYNTHETIC_TICKS, list(refs), DAY, 40)
    return refs


async def _archive(pool: asyncpg.Pool, fut_id: int) -> None:
    """The future's ticks before ARCHIVED_UPTO also in tick_archive, as the archive job leaves them
    until retention drops them from tick_data; and two days older ticks only the archive holds."""
    await pool.execute(
        "INSERT INTO tick_archive SELECT * FROM tick_data WHERE instrument_id = $1 AND time < $2",
        fut_id,
        ARCHIVED_UPTO,
    )
    await pool.execute(
        f"INSERT INTO tick_archive (instrument_id, time, {AFTER_TIME}) "
        f"SELECT instrument_id, time - interval '2 days', {AFTER_TIME} FROM tick_data "
        "WHERE instrument_id = $1 AND time < $2",
        fut_id,
        ARCHIVED_UPTO,
    )
    await pool.execute("INSERT INTO archive_progress (what, upto) VALUES ('ticks', $1)", ARCHIVED_UPTO)


async def _export(pool: asyncpg.Pool, kind: str, refs: list[str], start: datetime, end: datetime) -> Any:
    req = await build_request(
        pool,
        kind,
        refs,
        interval="1m",
        start=start,
        end=end,
        zone="utc",
        broker=None,  # type: ignore[arg-type]
    )
    data = b"".join([chunk async for chunk in export_stream(pool, req, "csv")])
    return read_export(data, req.kind, "utc").to_pylist()


async def test_ticks_of_many_instruments_come_whole_in_the_order_asked(db_pool: asyncpg.Pool) -> None:
    refs = await _instruments(db_pool, "TBATCH")
    fut_id = next(i for i, ref in refs.items() if ref.startswith("NFO:"))
    await _archive(db_pool, fut_id)
    order = list(refs)
    random.Random(16).shuffle(order)
    order.remove(fut_id)
    order.insert(BATCH_INSTRUMENTS + 1, fut_id)  # in the second COPY, between shares

    start, end = DAY - timedelta(days=3), DAY + timedelta(days=1)
    rows = await _export(db_pool, "ticks", [f"id:{i}" for i in order], start, end)

    expected: list[dict[str, Any]] = []
    for iid in order:
        query = f"SELECT {TICK_COLUMNS} FROM tick_data WHERE instrument_id = $1 ORDER BY time"
        if iid == fut_id:
            query = (
                f"SELECT {TICK_COLUMNS} FROM tick_archive WHERE instrument_id = $1 UNION ALL "
                f"SELECT {TICK_COLUMNS} FROM tick_data WHERE instrument_id = $1 AND time >= $2 ORDER BY time"
            )
        args = (iid, ARCHIVED_UPTO) if iid == fut_id else (iid,)
        expected += [{"instrument": refs[iid], **dict(r)} for r in await db_pool.fetch(query, *args)]
    archived_only = sum(1 for r in expected if r["time"] < DAY)
    assert 0 < archived_only < 40 and len(expected) == len(refs) * 40 + archived_only
    assert rows == expected


async def test_candles_of_many_instruments_over_several_windows_in_the_order_asked(
    db_pool: asyncpg.Pool,
) -> None:
    refs = await _instruments(db_pool, "CBATCH")
    await refresh_all(db_pool)
    early = DAY - timedelta(days=40)  # the 1m read window is 31 days: this bucket is in the first
    await db_pool.execute(
        "INSERT INTO broker_candles (instrument_id, timeframe, bucket, open, high, low, close, volume, source) "
        "SELECT i, '1m', $2, 1, 2, 1, 2, 5, 'sim' FROM unnest($1::integer[]) AS i",
        list(refs),
        early + timedelta(hours=4),
    )
    order = list(refs)
    random.Random(17).shuffle(order)
    start, end = early, DAY + timedelta(days=1)
    assert end - start > Timeframe.M1.facts.max_span

    rows = await _export(db_pool, "candles", [f"id:{i}" for i in order], start, end)

    expected: list[dict[str, Any]] = []
    for iid in order:
        series = await db_pool.fetch("SELECT * FROM read_candles($1, '1m', $2, $3)", iid, start, end)
        expected += [
            {"instrument": refs[iid], "interval": "1m", "time": r["bucket"], **dict(r)} for r in series
        ]
    # one broker candle (in the first window) and 40 one-tick live minutes (the second) each
    assert len(expected) == len(refs) * (1 + 40) and {"broker", "live"} <= {r["source"] for r in expected}
    assert rows == [{k: r[k] for k in names("candles")} for r in expected]
