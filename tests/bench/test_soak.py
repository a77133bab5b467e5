"""The soak benchmark's short variant: one simulated day, three instruments, every fault of the schedule.

Runs ``trading-helper bench soak --json`` as a user would (it starts its own Kite stand-in, Redis
with AOF, fault proxy and ``serve`` child; one fresh database on the test PostgreSQL) and reads
its one JSON object from stdout.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.bench.helpers import run_bench_json

pytestmark = pytest.mark.slow

KEYS = {
    "days",
    "ticks_sent",
    "ticks_received",
    "ticks_stored",
    "lost",
    "duplicated",
    "dead_lettered",
    "candles_checked",
    "candle_mismatches",
    "faults",
    "rss_mb_start",
    "rss_mb_end",
    "seconds",
}
KINDS = {
    "token_expiry",
    "reconnect_preopen",
    "reconnect_session",
    "redis_restart",
    "postgres_down",
    "serve_sigkill",
    "api_restart",
    "poison_row",
}


@pytest.fixture(scope="module")
def soak(admin_dsn: str) -> dict[str, Any]:
    env = {**os.environ, "DATABASE_URL": admin_dsn}
    env.pop("TH_CLOCK", None)
    args = ["soak", "--days", "1", "--instruments", "3", "--speed", "600"]
    return run_bench_json(args, env, timeout_s=840)


@pytest.mark.timeout(900)
def test_the_soak_drives_the_real_path_and_accounts_for_every_tick(soak: dict[str, Any]) -> None:
    assert KEYS <= set(soak), f"missing: {KEYS - set(soak)}"
    assert soak["days"] == 1
    assert {f["kind"] for f in soak["faults"]} == KINDS
    assert soak["ticks_sent"] > 1000 and soak["ticks_stored"] > 0
    assert soak["ticks_received"] <= soak["ticks_sent"]
    # nothing stored twice, nothing stored that was never sent
    assert soak["duplicated"] == 0, soak["duplicated_ranges"]
    assert soak["unexpected_rows"] == 0
    # every hole in a session was fetched from the broker, no range twice, and a second read of
    # the day reaches the broker no more
    assert soak["history_refetched"] == 0, soak["history_refetched_samples"]
    assert soak["history_calls_on_second_read"] == 0
    assert soak["candles_checked"] > 0
    assert soak["api_errors"] == {}


@pytest.mark.timeout(900)
def test_every_hole_is_fetched_from_the_broker(soak: dict[str, Any]) -> None:
    # each unfetched bucket comes with its missing trades, the nearest fault and the coverage rows
    assert soak["holes_unfetched"] == 0, soak["holes_unfetched_samples"]


@pytest.mark.timeout(900)
def test_the_soak_meets_the_targets(soak: dict[str, Any]) -> None:
    unrecovered = [f for f in soak["faults"] if f["recovered_s"] is None or f["recovered_s"] > 30]
    assert unrecovered == [], unrecovered
    assert soak["lost"] == 0, soak["missing_ranges"]
    assert soak["dead_lettered"] == soak["poison_ticks_sent"]
    assert soak["candle_mismatches"] == 0, soak["candle_mismatch_samples"]
    # memory of one serve process from warm-up to its stop (rss_basis; every process in rss_by_process)
    assert soak["rss_mb_start"] is not None, soak["rss_by_process"]
    assert abs(soak["rss_mb_end"] - soak["rss_mb_start"]) <= 0.2 * soak["rss_mb_start"], soak[
        "rss_by_process"
    ]
