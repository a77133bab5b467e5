"""The cluster benchmark's small variant: 2 accounts, 3 collectors, 2 writers, 2 API replicas as
real processes, a SIGKILL of a collector, of a writer and of a replica; every tick accounted for.

Runs ``trading-helper bench cluster --json`` as a user would (its own Kite stand-in and Redis,
one fresh database on the test PostgreSQL) and reads its one JSON object from stdout.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.bench.helpers import run_bench_json

pytestmark = pytest.mark.slow

KEYS = {
    "accounts", "shards", "collectors", "writers", "api_replicas", "ticks_sent", "ticks_stored", "lost",
    "duplicated", "takeover_s", "history_calls", "history_calls_duplicated", "latency_ms_p99", "seconds",
}  # fmt: skip


@pytest.fixture(scope="module")
def cluster(admin_dsn: str) -> dict[str, Any]:
    env = {**os.environ, "DATABASE_URL": admin_dsn}
    args = ["cluster", "--accounts", "2", "--instruments", "90", "--seconds", "30", "--collectors", "3",
            "--restart-after", "2"]  # fmt: skip
    return run_bench_json(args, env, timeout_s=400)


@pytest.mark.timeout(420)
def test_a_small_cluster_survives_a_kill_of_each_process(cluster: dict[str, Any]) -> None:
    assert KEYS <= set(cluster), f"missing: {KEYS - set(cluster)}"
    assert (cluster["accounts"], cluster["collectors"], cluster["writers"], cluster["api_replicas"]) == (
        2,
        3,
        2,
        2,
    )
    assert cluster["shards"] == 6  # 2 accounts x Kite's 3 connections, 15 instruments each
    assert cluster["ticks_sent"] > 90 * 2 * 20 and cluster["drained"]
    assert cluster["lost"] == 0 and cluster["duplicated"] == 0 and cluster["dead_lettered"] == 0
    assert cluster["ticks_stored"] == cluster["ticks_received"]
    kills = [e for e in cluster["events"] if "kill" in e]
    assert [e["kill"].split("-")[0] for e in kills] == ["collector", "writer", "api"], kills
    assert all(e["takeover_s"] is not None and e["takeover_s"] < 10 for e in kills[:2]), kills
    assert cluster["takeover_s"] < 10
    assert kills[2]["others_status"] == [200]  # the other replica answers
    # each killed process was started again (--restart-after 2)
    restarts = [e for e in cluster["events"] if "restart" in e]
    assert sorted(e["restart"] for e in restarts) == sorted(e["kill"] for e in kills), restarts
    (status,) = [e["api_status_cluster"] for e in cluster["events"] if "api_status_cluster" in e]
    assert status == {"accounts": ["a", "b"], "instruments": 90, "unassigned": 0, "shards": 6}
    assert cluster["upgrades_per_key"].keys() == {"cluster_key_a", "cluster_key_b"}  # each account its key
    assert cluster["history_calls"] >= 1 and cluster["latency_ms_p99"] is not None
    # the lag by stage (ingest/lags.py), counted for every tick the total counts
    stages = cluster["latency_stages_ms"]
    assert set(stages) == {"total", "collect", "stream", "batch", "commit"}
    assert stages["total"]["p99"] == cluster["latency_ms_p99"]
    assert all(v["p50"] is not None and v["p50"] <= stages["total"]["p99"] for v in stages.values()), stages
    # where the CPU went before the kills: every role measured, the machine at least their sum
    cores = cluster["cpu_cores_before_kills"]
    roles = {"collector", "writer", "api", "standin", "redis", "postgres"}
    assert roles <= cores.keys() and all(cores[r] > 0 for r in roles), cores
    assert cores["machine"] >= 0.9 * sum(cores[r] for r in roles), cores
    assert cluster["cpu_us_per_tick_before_kills"]["collector"] > 0
    # the collector's kill left coverage holes; every one read back through a replica was
    # backfilled from the stand-in's history (or lies outside the session: nothing to fill)
    assert cluster["holes"] > 0 and cluster["holes_instruments_sampled"] > 0, cluster
    assert cluster["holes_unfetched"] == 0, cluster["holes_unfetched_samples"]
    assert cluster["holes_backfilled"] + cluster["holes_outside_session"] == cluster["holes"]
    # the ticks by step of the schedule: every committed tick counted once, before or after a kill
    steps = cluster["latency_ms_p99_by_step"]
    assert list(steps) == ["steady", "kill collector", "kill writer", "history", "kill api"], steps
    assert steps["steady"]["p99"] == cluster["latency_ms_p99_before_kills"]
    assert sum(s["ticks"] for s in steps.values()) == cluster["latency_ticks"]
    # the same ticks by 10 s window of sending (bench/cluster/lagwatch.py), in order, each measured
    windows = cluster["latency_ms_p99_by_10s"]
    assert len(windows) >= 2 and [w["at_s"] for w in windows] == sorted(w["at_s"] for w in windows)
    assert all(w["ticks"] > 0 and w["p99"] is not None and w["commit_p99"] <= w["p99"] for w in windows)
    assert sum(w["ticks"] for w in windows) <= cluster["latency_ticks"]
