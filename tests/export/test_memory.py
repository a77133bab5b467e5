"""An export's memory is bounded whatever its range: a tick export several times larger than a
hard memory cap (tests/export/capped.py: RLIMIT_DATA) completes under it, in both formats, and
reads back whole, while a plain fetch of the same rows fails under the same cap."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow.parquet as pq
import pytest

from tests.storage.helpers import make_instruments
from trading_helper.storage import sql_export

pytestmark = pytest.mark.timeout(600)

BUDGET_MB = 48
TICKS_PER_DAY = 300_000
REPO = Path(__file__).resolve().parents[2]


async def _capped(
    dsn: str, fmt: str, start: datetime, end: datetime, budget_mb: int, out: Path, refs: list[str]
) -> tuple[int, dict[str, Any] | str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.export.capped", dsn, "ticks", fmt, start.isoformat(), end.isoformat(),
        str(budget_mb), str(out), *refs,
        cwd=REPO, env={**os.environ}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 500)
    assert proc.returncode is not None
    if proc.returncode not in (0, 3):
        return proc.returncode, stderr.decode()[-2000:]
    return proc.returncode, json.loads(stdout)


async def test_an_export_larger_than_the_memory_cap_completes_under_it(
    db_pool: asyncpg.Pool, db_dsn: str, tmp_path: Path
) -> None:
    ids = await make_instruments(db_pool, 4, prefix="MEMCAP")
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    await db_pool.execute("SELECT ensure_tick_partitions($1::timestamptz, $1::timestamptz)", day)
    await db_pool.execute(sql_export.SYNTHETIC_TICKS, ids, day, TICKS_PER_DAY)
    rows = len(ids) * TICKS_PER_DAY
    refs = [f"id:{i}" for i in ids]

    csv_out = tmp_path / "ticks.csv"
    code, result = await _capped(db_dsn, "csv", day, day + timedelta(days=1), BUDGET_MB, csv_out, refs)
    assert code == 0, result
    assert isinstance(result, dict)
    assert result["bytes"] > 3 * result["budget"], result  # the export is well beyond the cap
    with csv_out.open("rb") as lines:
        assert sum(1 for _ in lines) == rows + 1

    pq_out = tmp_path / "ticks.parquet"
    code, result = await _capped(db_dsn, "parquet", day, day + timedelta(days=1), BUDGET_MB, pq_out, refs)
    assert code == 0, result
    assert isinstance(result, dict)
    assert result["arrow_peak"] < result["budget"], result  # what the cap cannot see of Arrow
    assert pq.ParquetFile(pq_out).metadata.num_rows == rows

    # the cap is real: the same rows fetched at once do not fit under it
    code, result = await _capped(
        db_dsn, "naive", day, day + timedelta(days=1), BUDGET_MB, tmp_path / "-", refs
    )
    assert code == 3 and isinstance(result, dict) and "MemoryError" in result["failed"], result
