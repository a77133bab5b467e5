"""The shard plan, its collectors and writers in ``trading-helper status`` (cluster/status.py),
read from a Redis of the test's own (a published plan would show in everyone's status)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from trading_helper.bench.soak.processes import RedisServer
from trading_helper.cluster.lease import LeaseGroup
from trading_helper.cluster.plan import plan_shards
from trading_helper.ingest import keys


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


async def status_json(tmp_path: Path, redis_url: str) -> dict[str, object]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "REDIS_URL": redis_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trading_helper.cli", "status", "--json",
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    result: dict[str, object] = json.loads(out)
    return result


async def test_status_shows_the_plan_its_collectors_and_writers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    assert "cluster" not in await status_json(tmp_path, redis_server.url)  # no plan: a single serve
    redis = aioredis.Redis.from_url(redis_server.url)
    groups: list[LeaseGroup] = []
    try:
        plan = plan_shards("kite", range(1, 11), ["a", "b"])
        await redis.set(keys.PLAN, plan.to_json())

        async def nothing(_: str) -> None:
            return None

        collector = LeaseGroup(redis, "collector", on_acquired=nothing, on_lost=nothing, owner="host:11:c0")
        writer = LeaseGroup(redis, "writer", on_acquired=nothing, on_lost=nothing, owner="host:12:w0")
        groups += [collector, writer]
        await collector.step(["kite:a:0"])
        await writer.step(["th:ticks:kite:a:0"])
        await redis.hset(
            keys.SHARD_STATUS, "kite:a:0", json.dumps({"owner": "host:11:c0", "feed_state": "connected"})
        )
        await redis.hset(
            keys.WRITER_STATUS, "host:12:w0", json.dumps({"streams": ["th:ticks:kite:a:0"], "written": 5})
        )
        cluster = (await status_json(tmp_path, redis_server.url))["cluster"]
        assert isinstance(cluster, dict)
        assert (
            cluster["accounts"] == ["a", "b"] and cluster["instruments"] == 10 and cluster["unassigned"] == 0
        )
        assert cluster["shards"]["kite:a:0"] == {
            "instruments": 2,
            "collector": "host:11:c0",
            "feed_state": "connected",
            "stream": "th:ticks:kite:a:0",
            "writer": "host:12:w0",
        }
        assert cluster["shards"]["kite:b:2"]["collector"] is None  # nobody holds it: shown as such
        assert cluster["writers"]["host:12:w0"]["written"] == 5
    finally:
        for group in groups:
            await group.aclose()
        await redis.aclose()
