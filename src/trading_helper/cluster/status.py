"""What ``/api/status`` and ``trading-helper status`` show of the cluster: the shard plan, who
collects each shard and who writes each stream (None when no coordinator has published a plan)."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from trading_helper.cluster.coordinator import read_plan
from trading_helper.cluster.leasekeys import lease_owners
from trading_helper.ingest import keys


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def cluster_status(redis: aioredis.Redis, tick_stream: str) -> dict[str, Any] | None:
    """Raises what redis-py raises (the callers map Redis being away)."""
    plan = await read_plan(redis)
    if plan is None:
        return None
    names = [s.key for s in plan.shards]
    streams = [keys.shard_stream(tick_stream, n) for n in names]
    collectors = await lease_owners(redis, "collector", names)
    writers = await lease_owners(redis, "writer", streams)
    shard_status = {_text(k): json.loads(v) for k, v in (await redis.hgetall(keys.SHARD_STATUS)).items()}
    writer_status = {_text(k): json.loads(v) for k, v in (await redis.hgetall(keys.WRITER_STATUS)).items()}
    summary = plan.summary()
    shards = {}
    for name, stream in zip(names, streams, strict=True):
        seen = shard_status.get(name, {})
        owner = collectors.get(name)
        shards[name] = {
            "instruments": summary["shards"][name],
            "collector": owner,
            "feed_state": seen.get("feed_state") if owner and seen.get("owner") == owner else None,
            "stream": stream,
            "writer": writers.get(stream),
        }
    return {
        **{k: v for k, v in summary.items() if k != "shards"},
        "shards": shards,
        "writers": {
            owner: {k: s.get(k) for k in ("streams", "written", "lost", "dead_lettered", "maintenance")}
            for owner, s in writer_status.items()
            if owner in set(writers.values())
        },
    }
