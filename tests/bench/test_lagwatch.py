"""bench/cluster/lagwatch.py against a real Redis: a sampling that fails is reported, not lost."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from trading_helper.bench.cluster.lagwatch import LagWatch
from trading_helper.ingest import keys
from trading_helper.ingest.lags import LagHistograms


async def test_a_sampling_that_fails_raises_when_stopped(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url, db=11)
    try:
        await redis.delete(keys.WRITER_STATUS)
        await redis.hset(
            keys.WRITER_STATUS, "w1", json.dumps({"receive_to_commit_ms": LagHistograms().as_json()})
        )
        watch = LagWatch(redis, every_s=0.02)
        watch.start()
        await asyncio.sleep(0.1)
        assert len(watch.readings) >= 2  # it samples while the status reads
        await redis.hset(keys.WRITER_STATUS, "w1", "{not json")
        await asyncio.sleep(0.1)
        taken = len(watch.readings)
        await asyncio.sleep(0.1)
        assert len(watch.readings) == taken  # the sampling died at the bad status
        with pytest.raises(RuntimeError, match="the receive-to-commit sampling failed"):
            await watch.stop()
        await watch.stop()  # once reported, stopping again is a no-op
    finally:
        await redis.delete(keys.WRITER_STATUS)
        await redis.aclose()


async def test_a_sampling_cancelled_at_the_end_stops_quietly(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url, db=11)
    try:
        await redis.delete(keys.WRITER_STATUS)
        watch = LagWatch(redis, every_s=0.02)
        watch.start()
        await asyncio.sleep(0.07)
        watch.cancel()
        await watch.stop()
        assert watch.readings and all(h.total == LagHistograms().total for _, h in watch.readings)
    finally:
        await redis.aclose()
