"""``trading-helper bench options --json`` on a small chain: one JSON line with every figure, the
references measured in the same run, and its throwaway database and Redis key gone afterwards."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.bench.helpers import run_bench_json
from tests.db import with_database


async def test_bench_options_prints_its_figures(admin_dsn: str, redis_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": with_database(admin_dsn, "postgres"), "REDIS_URL": redis_url}
    args = ["options", "--strikes", "20", "--samples", "10"]
    result = await asyncio.to_thread(run_bench_json, args, env, 300)
    assert result["strikes"] == 20 and result["options"] == 40 and result["api_chain_strikes"] == 20
    assert result["reference_refused"] == 0
    for key in (
        "iv_greeks_p50_ms",
        "reference_p50_ms",
        "compute_chain_p50_ms",
        "api_chain_p50_ms",
        "api_reference_p50_ms",
    ):
        assert result[key] > 0, key
    # ratios of the unrounded times: within the rounding of the printed ones
    ratio = result["iv_greeks_p50_ms"] / result["reference_p50_ms"]
    assert result["iv_greeks_vs_reference"] == pytest.approx(ratio, rel=0.01)
    database = result["database"].removesuffix(" (dropped)")
    key = result["quotes_key"].removesuffix(" (deleted)")
    assert database.startswith("th_bench_") and key.startswith("th:quotes:bench:")
    admin = await asyncpg.connect(admin_dsn)
    try:
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", database) == 0
    finally:
        await admin.close()
    redis = aioredis.from_url(redis_url)
    try:
        assert await redis.exists(key) == 0
    finally:
        await redis.aclose()
