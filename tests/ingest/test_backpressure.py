"""Bounded buffers: Redis away -> frames held in memory up to a bound, then counted drops;
the stream at its cap -> frames held, never trimmed away unwritten."""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as aioredis

from tests.ingest.helpers import numbered_frames, redis_stream, sim_feed
from tests.services import _free_port
from tests.storage.helpers import reset_market_data
from trading_helper.ingest.receiver import TickReceiver


async def test_redis_unreachable_holds_a_bounded_queue_and_counts_drops(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool, 10)
    dead = aioredis.Redis(host="127.0.0.1", port=_free_port(), socket_connect_timeout=0.2)
    receiver = TickReceiver(dead, stream="th:nowhere", max_entries=1000, local_max_frames=5)
    for frame in numbered_frames(feed, 8, 10):
        await receiver.on_ticks(frame)
    assert len(receiver.local) == 5
    assert receiver.redis_down_since is not None
    assert receiver.rejected == {"buffer_full": 30}
    assert receiver.status()["redis_down"] is True
    await dead.aclose()


async def test_stream_at_its_cap_keeps_frames_in_memory_until_it_drains(
    db_pool: asyncpg.Pool, redis_url: str
) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool, 10)
    async with redis_stream(redis_url) as (redis, stream):
        receiver = TickReceiver(
            redis,
            stream=stream,
            max_entries=1000,
            local_max_frames=100,
            quotes_key=f"{stream}:q",
            live_channel=f"{stream}:live",
        )
        await redis.xadd(stream, {b"t": b""})
        for _ in range(999):  # the writer is behind: the stream is at its cap
            await redis.xadd(stream, {b"t": b""})
        frames = numbered_frames(feed, 3, 10)
        for frame in frames:
            await receiver.on_ticks(frame)
        assert await redis.xlen(stream) == 1001  # the first frame found out the stream is full
        assert len(receiver.local) == 2 and not receiver.rejected
        await redis.xtrim(stream, maxlen=0)  # the writer caught up and trimmed what it committed
        await asyncio.sleep(1.1)  # the receiver looks at the stream again after a second
        await receiver.flush()
        assert len(receiver.local) == 0
        assert await redis.xlen(stream) == 2
        await redis.delete(f"{stream}:q")


async def test_a_resent_frame_whose_first_append_landed_is_not_doubled(
    db_pool: asyncpg.Pool, redis_url: str
) -> None:
    """The reply to an XADD can be lost after Redis appended the entry (a connection breaking at
    the wrong moment): the frame is held and re-sent with the same id, which Redis refuses."""
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool, 5)
    async with redis_stream(redis_url) as (redis, stream):
        receiver = TickReceiver(
            redis,
            stream=stream,
            max_entries=1000,
            local_max_frames=10,
            quotes_key=f"{stream}:q",
            live_channel=f"{stream}:live",
        )
        [first, second] = numbered_frames(feed, 2, 10)
        await receiver.on_ticks(first)
        [(entry_id, fields)] = await redis.xrange(stream)
        # as if the reply had been lost: the same entry is held for a re-send, a new frame follows
        receiver.local.append((entry_id.decode(), fields, None))
        await receiver.on_ticks(second)
        await receiver.flush()  # a frame handed right after a send may wait in the outbox
        entries = await redis.xrange(stream)
        assert len(entries) == 2 and not receiver.local and not receiver.rejected
        assert entries[0][0] == entry_id and entries[1][0] > entry_id
        await redis.delete(f"{stream}:q")
