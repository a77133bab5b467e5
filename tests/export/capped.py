"""Run one export in this process under a hard memory cap: ``python -m tests.export.capped DSN
KIND FORMAT FROM TO BUDGET_MB OUT REF...`` (FORMAT csv, parquet, or
naive: the rows fetched at once, the control). After the imports, the data segment limit
(RLIMIT_DATA: heap and private writable mappings, the Arrow pool's included) is set to what the
process already uses plus BUDGET_MB, so an export that held its rows would fail with MemoryError.
Arrow's allocator reserves its arena before the cap (the warm-up), so what Arrow allocates inside
it is not counted there: its own peak (``max_memory`` of the pool) is reported for that. Prints one
JSON line: the budget, the file's size, the peak resident set, Arrow's peak."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from datetime import datetime
from pathlib import Path

import asyncpg
import pyarrow as pa

from trading_helper.export.encode import ParquetEncoder
from trading_helper.export.run import build_request, export_to_file


def vm_data_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


async def main(
    dsn: str, kind: str, fmt: str, start: str, end: str, budget_mb: int, out: str, refs: list[str]
) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    req = await build_request(
        pool, kind, refs, interval="1m", start=datetime.fromisoformat(start), end=datetime.fromisoformat(end),
        zone="utc", broker=None,
    )  # fmt: skip
    # warm what allocates once per process (the worker thread, Arrow's allocator) before the cap
    warm = ParquetEncoder("ticks", "utc")
    await asyncio.to_thread(warm.finish)
    used = vm_data_bytes()
    resource.setrlimit(resource.RLIMIT_DATA, (used + budget_mb * 2**20, resource.RLIM_INFINITY))
    if fmt == "naive":  # the control: the same rows held at once, as a plain fetch does
        rows = await pool.fetch(
            "SELECT * FROM tick_data WHERE instrument_id = ANY($1::integer[])",
            [i.id for i in req.instruments],
        )
        size = len(rows)
    else:
        size = await export_to_file(pool, req, fmt, Path(out))  # type: ignore[arg-type]
    await pool.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    arrow_peak = pa.default_memory_pool().max_memory()
    print(
        json.dumps(
            {
                "data_before": used,
                "budget": budget_mb * 2**20,
                "bytes": size,
                "peak_rss": peak,
                "arrow_peak": arrow_peak,
            }
        )
    )


def _chain(exc: BaseException | None) -> list[str]:
    names = []
    while exc is not None:
        names.append(type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    return names


if __name__ == "__main__":
    dsn, kind, fmt, start, end, budget, out, *refs = sys.argv[1:]
    try:
        asyncio.run(main(dsn, kind, fmt, start, end, int(budget), out, refs))
    except Exception as exc:  # the control's expected end: say which errors, exit 3
        print(json.dumps({"failed": _chain(exc)}))
        sys.exit(3)
