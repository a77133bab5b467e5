"""An instrument that moves to another shard (its account was lost, the plan placed it anew) goes
on in another stream, written by another writer: the volume already counted by the first stream's
writer is not counted again by the second, whose volume state was loaded before."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from tests.fakes.sink import wait_until
from tests.ingest.helpers import day_volumes, numbered_frames, sim_feed, stored_day_volumes
from tests.storage.helpers import reset_market_data
from trading_helper.brokers.base import FeedEvent, FeedState
from trading_helper.ingest.receiver import TickReceiver
from trading_helper.ingest.writer import StreamWriter
from trading_helper.models import Tick


async def _write(redis: aioredis.Redis, pool: asyncpg.Pool, stream: str, frames: list[list[Tick]]) -> None:
    receiver = TickReceiver(redis, stream=stream, max_entries=100_000, local_max_frames=100)
    for frame in frames:
        await receiver.on_ticks(frame)
    await receiver.flush()
    await StreamWriter(redis, pool, stream=stream).run(stop_when_idle=True)


async def test_a_moved_instrument_is_not_counted_twice_by_its_new_streams_writer(
    db_pool: asyncpg.Pool, redis_url: str
) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool, 3)
    frames = numbered_frames(feed, 30, 3)
    redis = aioredis.Redis.from_url(redis_url)
    old, new = (f"th:test:{uuid.uuid4().hex[:10]}:{n}" for n in ("old", "new"))
    try:
        await _write(redis, db_pool, old, frames[:10])
        # the new shard's writer is running (it loaded the volume state now) before the old
        # shard's last ticks are committed
        later = StreamWriter(redis, db_pool, stream=new, block_ms=20)
        task = asyncio.create_task(later.run())
        await wait_until(lambda: later._preparer is not None)  # its state is loaded
        await _write(redis, db_pool, old, frames[10:20])
        # the instruments move: the new shard's feed subscribes them, and their ticks go on there
        receiver = TickReceiver(redis, stream=new, max_entries=100_000, local_max_frames=100)
        ids = frozenset(t.instrument_id for f in frames for t in f)
        await receiver.on_event(FeedEvent(FeedState.CONNECTED, datetime.now(UTC), ids))
        for frame in frames[20:]:
            await receiver.on_ticks(frame)
        await receiver.flush()
        last_id = await redis.xrevrange(new, count=1)
        await wait_until(lambda: later.committed_through(last_id[0][0]), within_s=10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await redis.delete(old, new)
        await redis.aclose()
    assert await stored_day_volumes(db_pool) == day_volumes(frames)
