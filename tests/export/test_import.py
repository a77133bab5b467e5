"""`trading-helper import candles`: an export, wiped, imported back reproduces the broker history
and its read series, and counts as fetched; bad rows are refused, each with its reason."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from tests.export.helpers import run_cli
from tests.storage.helpers import make_instruments
from trading_helper.candles.calendar import SessionLoader
from trading_helper.candles.gaps import find_gaps
from trading_helper.export.importer import import_candles
from trading_helper.export.run import build_request, export_to_file
from trading_helper.timeframes import IST, Timeframe

START = datetime(2024, 3, 4, tzinfo=IST)
END = datetime(2024, 3, 7, tzinfo=IST)


async def _plant_history(pool: asyncpg.Pool, iid: int) -> None:
    """Broker 1m candles over the sessions of 4-6 March 2024 and their 1d candles, as a backfill
    leaves them (candles and fetched ranges)."""
    for day in range(3):
        open_ = (START + timedelta(days=day)).replace(hour=9, minute=15)
        await pool.execute(
            "INSERT INTO broker_candles (instrument_id, timeframe, bucket, open, high, low, close, volume, "
            "open_interest, source) SELECT $1, '1m', $2::timestamptz + g * interval '1 minute', "
            "100 + g * 0.05, 100.5 + g * 0.05, 99.75 + g * 0.05, 100.1 + g * 0.05, 1000 + g, "
            "CASE WHEN g % 4 = 0 THEN NULL ELSE 50000 + g END, 'kite' FROM generate_series(0, 374) g",
            iid,
            open_,
        )
        await pool.execute(
            "INSERT INTO broker_candles (instrument_id, timeframe, bucket, open, high, low, close, volume, "
            "open_interest, source) VALUES ($1, '1d', $2, 100, 120.25, 99.75, 118.6, 375000, NULL, 'kite')",
            iid,
            open_.replace(hour=0),
        )
    await pool.execute(
        "INSERT INTO fetch_coverage (instrument_id, timeframe, period, candles, source) "
        "VALUES ($1, '1m', tstzrange($2, $3), 1125, 'kite'), ($1, '1d', tstzrange($4, $5), 3, 'kite')",
        iid,
        START.replace(hour=9, minute=15),
        (END - timedelta(days=1)).replace(hour=15, minute=30),
        START.replace(minute=15),
        END.replace(minute=15),
    )


async def _history(pool: asyncpg.Pool, iid: int) -> list[tuple[Any, ...]]:
    rows = await pool.fetch(
        "SELECT timeframe, bucket, open, high, low, close, volume, open_interest FROM broker_candles "
        "WHERE instrument_id = $1 ORDER BY timeframe, bucket",
        iid,
    )
    return [tuple(r) for r in rows]


async def _series(pool: asyncpg.Pool, iid: int, tf: Timeframe) -> list[tuple[Any, ...]]:
    rows = await pool.fetch("SELECT * FROM read_candles($1, $2, $3, $4)", iid, tf.value, START, END)
    return [tuple(r) for r in rows]


async def _gaps(pool: asyncpg.Pool, iid: int, tf: Timeframe) -> list[Any]:
    async with pool.acquire() as conn:
        return list(await find_gaps(conn, iid, tf, START, END, END + timedelta(days=1)))


async def test_export_wipe_import_reproduces_the_broker_history(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    [iid] = await make_instruments(db_pool, 1, prefix="IMPRT")
    await SessionLoader().ensure(db_pool, "NSE", [2024])
    await _plant_history(db_pool, iid)
    before = await _history(db_pool, iid)
    series = {tf: await _series(db_pool, iid, tf) for tf in (Timeframe.M1, Timeframe.D1)}
    assert len(before) == 3 * 375 + 3 and not await _gaps(db_pool, iid, Timeframe.M1)

    files = []
    for tf, fmt, zone in ((Timeframe.M1, "csv", "ist"), (Timeframe.D1, "parquet", "utc")):
        req = await build_request(
            db_pool, "candles", [f"id:{iid}"], interval=tf.value, start=START, end=END, zone=zone, broker=None
        )
        path = tmp_path / f"{tf.value}.{fmt}"
        await export_to_file(db_pool, req, fmt, path)  # type: ignore[arg-type]
        files.append(path)

    await db_pool.execute("DELETE FROM broker_candles WHERE instrument_id = $1", iid)
    await db_pool.execute("DELETE FROM fetch_coverage WHERE instrument_id = $1", iid)
    assert await _gaps(db_pool, iid, Timeframe.M1) and await _gaps(db_pool, iid, Timeframe.D1)

    for path in files:
        report = await import_candles(db_pool, path)
        assert report.refused == {} and report.taken == report.rows > 0, report.as_dict()
    assert await _history(db_pool, iid) == before
    assert {tf: await _series(db_pool, iid, tf) for tf in series} == series
    # recorded as fetched: the backfill finds nothing to ask a broker for
    assert not await _gaps(db_pool, iid, Timeframe.M1) and not await _gaps(db_pool, iid, Timeframe.D1)
    sources = {
        r[0]
        for r in await db_pool.fetch(
            "SELECT DISTINCT source FROM broker_candles WHERE instrument_id = $1", iid
        )
    }
    assert sources == {"import"}


BAD_FILE = """instrument,time,open,high,low,close,volume,open_interest
{ref},2024-03-11T09:15:00+05:30,100,101,99,100.5,10,
{ref},2024-03-11T09:16:00+05:30,100,101,99,100.5,10,7
{ref},2024-03-11T09:16:00+05:30,100,101,99,100.5,10,7
{ref},2024-03-11T09:17:30+05:30,100,101,99,100.5,10,
{ref},2024-03-11T09:18:00,100,101,99,100.5,10,
{ref},2024-03-11T09:19:00+05:30,100,99,101,100.5,10,
{ref},2024-03-11T09:20:00+05:30,100,101,99,102,10,
{ref},2024-03-11T09:21:00+05:30,-1,101,99,100.5,10,
{ref},2024-03-11T09:22:00+05:30,100,101,99,100.5,-3,
{ref},2024-03-11T09:23:00+05:30,100,101,99,100.5,2.5,
NSE:NO_SUCH_THING,2024-03-11T09:24:00+05:30,100,101,99,100.5,10,
{ref},yesterday,100,101,99,100.5,10,
{ref},2024-03-11T09:25:00+05:30,,101,99,100.5,10,
{ref},2024-03-11T03:56:00Z,100,101,99,100.5,10,
"""


async def test_bad_rows_are_refused_with_reasons_and_a_dry_run_writes_nothing(
    db_pool: asyncpg.Pool, db_dsn: str, tmp_path: Path
) -> None:
    [iid] = await make_instruments(db_pool, 1, prefix="IMPBAD")
    path = tmp_path / "bad.csv"
    path.write_text(BAD_FILE.format(ref=f"id:{iid}"))
    expected = {
        "duplicate": 1,
        "not_aligned": 1,
        "naive_time": 1,
        "ohlc_inconsistent": 2,
        "bad_price": 1,
        "bad_volume": 2,
        "bad_instrument": 1,
        "bad_time": 1,
        "missing_value": 1,
    }
    dry = await import_candles(db_pool, path, interval="1m", dry_run=True)
    assert dict(dry.refused) == expected and dry.taken == 3 and dry.rows == 14
    assert [r for r, _, _ in dry.examples][:3] == [3, 4, 5]  # row numbers of the file (header not counted)
    assert await db_pool.fetchval("SELECT count(*) FROM broker_candles WHERE instrument_id = $1", iid) == 0
    assert await db_pool.fetchval("SELECT count(*) FROM fetch_coverage WHERE instrument_id = $1", iid) == 0

    # the command line: the naive row taken as IST, the report on stdout
    code, out, err = await run_cli(
        tmp_path,
        {"DATABASE_URL": db_dsn},
        "import",
        "candles",
        str(path),
        "--interval",
        "1m",
        "--assume-tz",
        "ist",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["taken"] == 4 and "naive_time" not in report["refused"]
    stored = await db_pool.fetch(
        "SELECT bucket, open_interest FROM broker_candles WHERE instrument_id = $1 ORDER BY bucket", iid
    )
    assert [(r[0].astimezone(IST).strftime("%H:%M"), r[1]) for r in stored] == [
        ("09:15", None),
        ("09:16", 7),
        ("09:18", None),
        ("09:26", None),
    ]
    span = await db_pool.fetchval("SELECT period FROM fetch_coverage WHERE instrument_id = $1", iid)
    assert (span.lower, span.upper) == (
        datetime(2024, 3, 11, 9, 15, tzinfo=IST),
        datetime(2024, 3, 11, 9, 27, tzinfo=IST),
    )
