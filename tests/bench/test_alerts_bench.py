"""``trading-helper bench alerts`` end to end at a small size: both parts report, the latency run
delivers through the real service, Redis and a throwaway database (dropped afterwards)."""

from __future__ import annotations

from trading_helper.bench.alerts import evaluation_cost, latency
from trading_helper.config import Settings


def test_evaluation_cost_is_measured_against_decoding() -> None:
    cost = evaluation_cost(100, 10, 2000)
    assert cost["fired"] == 0  # the bench's rules are evaluated on every tick but never fire
    assert cost["us_per_tick"] > 0 and cost["x_reference"] > 0


async def test_latency_run_delivers_and_drops_its_database(db_dsn: str, redis_url: str) -> None:
    settings = Settings(DATABASE_URL=db_dsn, REDIS_URL=redis_url)
    result = await latency(
        settings, rules=40, instruments=5, rate=200, seconds=2, firing=3, progress=lambda t, d: None
    )
    assert result["deliveries"] >= 3 and result["p99_ms"] is not None and result["p99_ms"] > 0
