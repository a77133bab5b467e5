"""``trading-helper bench export``: export throughput and memory, ticks of many instruments.

A throwaway database (``th_bench_<random>``, dropped afterwards) gets ``instruments`` instruments
with ``ticks_per_day`` ticks each on each of ``days`` days (every column filled, spread over the
session), then the ticks of all instruments over the whole range are exported as CSV and as
Parquet through the real path (``export/run.py``: COPY, bounded queue, encoder), the bytes counted
and dropped. The reference, timed in the same run over the same rows, is the database's own CSV
of ``SELECT * FROM tick_data`` over the range in one COPY, read and dropped (no instrument text, no
order, no export time format, no encoder): ratios say what the export adds to it. Peak memory is the process's maximum resident set
(``ru_maxrss``), reported with the resident set before the exports began.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from trading_helper.bench.scratch import scratch_database
from trading_helper.config import Settings
from trading_helper.export.formats import FORMATS
from trading_helper.export.run import export_stream
from trading_helper.export.source import ExportRequest
from trading_helper.models import Instrument
from trading_helper.storage import sql_export
from trading_helper.storage.db import create_pool
from trading_helper.storage.instruments import get_instrument, lookup_tokens, sync_instruments

#: the issue's bounds for 30 days of ticks of 1,000 instruments
RSS_LIMIT_MB = 300
ROWS_PER_S_FLOOR = 200_000


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def _load(
    pool: asyncpg.Pool, instruments: int, days: int, per_day: int, say: Callable[[str, float], None]
) -> tuple[tuple[Instrument, ...], datetime, datetime]:
    items = [
        Instrument("NSE", f"BENCHX{n}", "NSE", "EQ", broker_ids={"sim": f"BX{n}"}) for n in range(instruments)
    ]
    async with pool.acquire() as conn:
        await sync_instruments(conn, "sim", items, mark_expired=False)
        found = await lookup_tokens(conn, "sim", [f"BX{n}" for n in range(instruments)])
        ids = [found[f"BX{n}"] for n in range(instruments)]
        loaded = tuple([await get_instrument(conn, i) for i in ids])
    first = (datetime.now(UTC) - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    await pool.execute(
        "SELECT ensure_tick_partitions($1::timestamptz, $2::timestamptz)", first, first + timedelta(days=days)
    )
    for d in range(days):
        say(f"loading ticks: day {d + 1} of {days}", d / days)
        await pool.execute(sql_export.SYNTHETIC_TICKS, ids, first + timedelta(days=d), per_day)
    await pool.execute("ANALYZE tick_data")
    return loaded, first, first + timedelta(days=days)


async def _reference(pool: asyncpg.Pool, req: ExportRequest) -> tuple[float, int]:
    counted = 0

    async def sink(data: bytes) -> None:
        nonlocal counted
        counted += len(data)

    began = time.perf_counter()
    await pool.copy_from_query(sql_export.RAW_TICKS, req.start, req.end, output=sink, format="csv")
    return time.perf_counter() - began, counted


async def run_export_bench(
    settings: Settings,
    *,
    instruments: int,
    days: int,
    ticks_per_day: int,
    progress: Callable[[str, float], None] = lambda text, done: None,
) -> dict[str, Any]:
    async with scratch_database(settings.DATABASE_URL) as dsn:
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            loaded, start, end = await _load(pool, instruments, days, ticks_per_day, progress)
            rows = int(await pool.fetchval("SELECT count(*) FROM tick_data"))
            req = ExportRequest("ticks", loaded, start, end, zone="utc")
            progress("reference: the database's own CSV", 0.5)
            ref_s, ref_bytes = await _reference(pool, req)
            rss_before = rss_mb()
            result: dict[str, Any] = {
                "rows": rows,
                "instruments": instruments,
                "days": days,
                "ticks_per_instrument_day": ticks_per_day,
                "reference_raw_copy": {
                    "seconds": round(ref_s, 3),
                    "rows_per_s": round(rows / ref_s),
                    "bytes": ref_bytes,
                },
            }
            for fmt in FORMATS:
                progress(f"export as {fmt}", 0.6 if fmt == "csv" else 0.8)
                size, exported = 0, 0
                began = time.perf_counter()

                def count(done: int, rows_so_far: int) -> None:
                    nonlocal exported
                    exported = rows_so_far

                async for data in export_stream(pool, req, fmt, progress=count):
                    size += len(data)
                seconds = time.perf_counter() - began
                result[fmt] = {
                    "seconds": round(seconds, 3),
                    "rows": exported,
                    "rows_per_s": round(rows / seconds),
                    "bytes": size,
                    "time_vs_reference": round(seconds / ref_s, 2),
                }
            result["rss_before_exports_mb"] = round(rss_before, 1)
            result["peak_rss_mb"] = round(peak_rss_mb(), 1)
            result["checks"] = {
                "every_row_exported": all(result[f]["rows"] == rows for f in FORMATS),
                f"peak_rss_under_{RSS_LIMIT_MB}_mb": result["peak_rss_mb"] < RSS_LIMIT_MB,
                f"rows_per_s_at_least_{ROWS_PER_S_FLOOR}": all(
                    result[f]["rows_per_s"] >= ROWS_PER_S_FLOOR for f in FORMATS
                ),
            }
            return result
        finally:
            await pool.close()
