"""Live coverage in the database: an extension of open periods (every few seconds, one row per
instrument a collector carries) is an in-place update that writes no index entry, and the
captured ranges read back what was extended (migration 0017). Real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.storage.helpers import make_instruments
from trading_helper.brokers.base import FeedEvent, FeedState
from trading_helper.ingest.coverage import CoverageRecorder
from trading_helper.storage import sql_coverage

# this transaction's updates of live_coverage, all and heap-only (PostgreSQL's own counters)
_UPDATES = """
SELECT pg_stat_get_xact_tuples_updated('live_coverage'::regclass) AS updated,
       pg_stat_get_xact_tuples_hot_updated('live_coverage'::regclass) AS hot
"""
_CAPTURED = "SELECT captured_ranges($1, tstzrange($2, $3)) AS ranges"


@pytest.mark.flavour(
    "postgres", "the counters read are the server's own; the Node engine runs the same migration"
)
async def test_extending_open_coverage_updates_rows_in_place_and_is_read_back(db_pool: asyncpg.Pool) -> None:
    await db_pool.execute("TRUNCATE live_coverage")
    ids = await make_instruments(db_pool, 20, prefix="COVHOT")
    start = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
    await CoverageRecorder(db_pool, "sim").on_event(FeedEvent(FeedState.CONNECTED, start, frozenset(ids)))

    async with db_pool.acquire() as conn, conn.transaction():
        for step in range(1, 4):
            await conn.execute(sql_coverage.EXTEND_OF, "sim", ids, start + timedelta(seconds=2 * step))
        counts = await conn.fetchrow(_UPDATES)
    assert counts["updated"] == 3 * len(ids)
    assert counts["hot"] == counts["updated"]  # no index names the column an extension changes

    ranges = await db_pool.fetchval(
        _CAPTURED, ids[0], start - timedelta(minutes=1), start + timedelta(minutes=1)
    )
    assert [(r.lower, r.upper) for r in ranges] == [(start, start + timedelta(seconds=6))]
    started = await db_pool.fetchval(
        "SELECT min(started) FROM live_coverage WHERE instrument_id = $1", ids[0]
    )
    assert started == start
