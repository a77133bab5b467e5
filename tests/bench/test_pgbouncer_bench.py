"""``bench pgbouncer`` on a tiny dataset: every way read the same candles, every figure is there,
and the launcher's pgBouncer serves the database, then is gone."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg

from trading_helper.bench.pgbouncer import _listening, run_pgbouncer_bench, running_pgbouncer
from trading_helper.config import Settings


async def test_bench_pgbouncer_small(admin_dsn: str) -> None:
    result = await run_pgbouncer_bench(
        Settings(DATABASE_URL=admin_dsn), instruments=4, days=6, samples=20, concurrency=4, seconds=0.5
    )
    ways = ("direct_cached", "direct_no_cache", "pgbouncer")
    assert len({result[f"{w}_candles_avg"] for w in ways}) == 1 and result["direct_cached_candles_avg"] > 100
    for way in ways:
        assert 0 < result[f"{way}_p50_ms"] <= result[f"{way}_p99_ms"] and result[f"{way}_qps"] > 0, way
    for way in ways[1:]:
        assert result[f"{way}_p50_ratio"] == round(
            result[f"{way}_p50_ms"] / result["direct_cached_p50_ms"], 3
        )
    assert result["pgbouncer_server_connections"] == 2


async def test_the_launcher_serves_the_database_then_leaves_nothing_behind(admin_dsn: str) -> None:
    with running_pgbouncer(admin_dsn, pool_size=1) as url:
        port = urlsplit(url).port
        assert port is not None and _listening(port)
        conn = await asyncpg.connect(url, statement_cache_size=0)
        try:
            assert await conn.fetchval("SELECT current_database()") == urlsplit(admin_dsn).path.lstrip("/")
        finally:
            await conn.close()
    assert not _listening(port)
