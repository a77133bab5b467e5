"""Frames held in memory while Redis is away: live coverage claims only what is safe in Redis
(``TickReceiver.durable_at`` stops while frames wait and moves once they are in the stream), and
the held frames reach the stream once each, however many flushes run at a time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import redis.asyncio as aioredis

from tests.faults.proxy import FaultProxy
from tests.ingest.helpers import numbered_frames, redis_stream, sim_feed
from tests.storage.helpers import reset_market_data
from trading_helper.ingest.receiver import TickReceiver


@contextlib.asynccontextmanager
async def proxied_receiver(
    redis: aioredis.Redis, stream: str, *, local_max_frames: int
) -> AsyncIterator[tuple[TickReceiver, FaultProxy]]:
    """A receiver that reaches the test Redis through a fault proxy (cut = Redis away)."""
    kwargs = redis.connection_pool.connection_kwargs
    async with FaultProxy(kwargs["host"], kwargs["port"]) as proxy:
        via = aioredis.Redis(
            host="127.0.0.1", port=proxy.port, db=kwargs["db"], socket_connect_timeout=0.5, socket_timeout=2.0
        )
        try:
            yield (
                TickReceiver(
                    via,
                    stream=stream,
                    max_entries=100_000,
                    local_max_frames=local_max_frames,
                    quotes_key=f"{stream}:q",
                    live_channel=f"{stream}:live",
                ),
                proxy,
            )
        finally:
            await via.aclose()


async def test_durable_time_stops_while_frames_wait_in_memory(db_pool: asyncpg.Pool, redis_url: str) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool, 5)
    async with redis_stream(redis_url) as (redis, stream):
        async with proxied_receiver(redis, stream, local_max_frames=100) as (receiver, proxy):
            frames = numbered_frames(feed, 6, 5)
            assert receiver.durable_at is None
            await receiver.on_ticks(frames[0])
            first = receiver.durable_at
            assert first is not None  # in the stream: a crash now loses nothing received before it
            proxy.cut()  # Redis away: the next frames wait in memory
            for frame in frames[1:4]:
                await receiver.on_ticks(frame)
            await receiver.on_ticks([])  # a heartbeat does not make held frames safe
            await receiver.flush()
            assert receiver.local and receiver.durable_at == first
            proxy.heal()
            receiver._retry_at = 0.0  # retry now rather than after the receiver's 1 s pause
            await receiver.flush()  # held frames go to the stream: everything handed over is safe
            assert not receiver.local and receiver.durable_at is not None and receiver.durable_at > first
            assert await redis.xlen(stream) == 4


async def test_concurrent_flushes_send_every_held_frame_once(db_pool: asyncpg.Pool, redis_url: str) -> None:
    """The housekeeping's flush and a frame's append both drain the held frames; run together they
    must not pop one chunk twice (which dropped the next chunk unsent)."""
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool, 3)
    async with redis_stream(redis_url) as (redis, stream):
        async with proxied_receiver(redis, stream, local_max_frames=5000) as (receiver, proxy):
            frames = numbered_frames(feed, 1301, 3)
            proxy.cut()
            for frame in frames[:1300]:  # more than two chunks of 500 wait in memory
                await receiver.on_ticks(frame)
            assert len(receiver.local) == 1300
            proxy.heal()
            receiver._retry_at = 0.0
            await asyncio.gather(receiver.flush(), receiver.on_ticks(frames[1300]), receiver.flush())
            assert not receiver.local
            assert await redis.xlen(stream) == 1301
