"""``bench query`` on a tiny dataset: every figure is there, the data is fully covered (no broker
call), and the throwaway database is gone afterwards."""

from __future__ import annotations

import asyncpg

from trading_helper.bench.query import run_query_bench
from trading_helper.config import Settings


async def test_bench_query_small(admin_dsn: str) -> None:
    result = await run_query_bench(Settings(DATABASE_URL=admin_dsn), instruments=6, days=8, samples=10)
    for name in ("read_1m_day", "read_15m_month", "read_1d_year", "api_1m_day"):
        assert 0 < result[f"{name}_p50_ms"] <= result[f"{name}_p99_ms"], name
    assert result["api_broker_calls"] == 0
    assert result["flavour"] in ("postgres", "timescale")  # the server's: bench query runs on both
    assert result["rows"]["broker_candles"] > 0 and result["rows"]["live_1m_candles"] > 0
    assert result["read_1m_day_candles_avg"] > 100 and result["read_1d_year_candles_avg"] > 200
    name = result["database"].removesuffix(" (dropped)")
    assert name.startswith("th_bench_")
    conn = await asyncpg.connect(admin_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
    finally:
        await conn.close()
