"""Builders for ingest tests: simulated instruments in the database and numbered frames."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as aioredis

from trading_helper.brokers.sim import SimFeed, sim_instruments
from trading_helper.config import Settings
from trading_helper.ingest.receiver import TickReceiver
from trading_helper.ingest.writer import StreamWriter
from trading_helper.models import Tick
from trading_helper.storage.instruments import lookup_tokens, sync_instruments


async def sim_feed(pool: asyncpg.Pool, count: int = 50) -> SimFeed:
    items = sim_instruments(count)
    async with pool.acquire() as conn:
        await sync_instruments(conn, "sim", items, mark_expired=False)
        mapping = await lookup_tokens(conn, "sim", [i.broker_ids["sim"] for i in items])
    feed = SimFeed(Settings())
    await feed.subscribe(mapping)
    return feed


def numbered_frames(feed: SimFeed, frames: int, per_frame: int, first: int = 0) -> list[list[Tick]]:
    """Frames whose ticks carry a unique sequence number in ``bid_quantity``."""
    out, seq = [], first
    for _ in range(frames):
        frame = feed.make_frame(per_frame)
        for t in frame:
            t.bid_quantity = seq
            seq += 1
        out.append(frame)
    return out


async def stored_sequence_numbers(pool: asyncpg.Pool) -> tuple[int, int]:
    """(rows, distinct sequence numbers) in tick_data."""
    row = await pool.fetchrow("SELECT count(*), count(DISTINCT bid_qty) FROM tick_data")
    assert row is not None
    return row[0], row[1]


def day_volumes(frames: list[list[Tick]]) -> dict[int, int]:
    """Per instrument, what its candles' volume must sum to: the first tick counts its own trade,
    then every increment of the day volume."""
    first: dict[int, Tick] = {}
    last: dict[int, Tick] = {}
    for t in (t for f in frames for t in f):
        first.setdefault(t.instrument_id, t)
        last[t.instrument_id] = t
    return {i: (last[i].volume or 0) - (first[i].volume or 0) + (first[i].last_quantity or 0) for i in first}


async def stored_day_volumes(pool: asyncpg.Pool) -> dict[int, int]:
    rows = await pool.fetch("SELECT instrument_id, sum(volume_delta)::bigint FROM tick_data GROUP BY 1")
    return {r[0]: r[1] for r in rows}


@asynccontextmanager
async def redis_stream(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    client = aioredis.Redis.from_url(redis_url)
    stream = f"th:test:{uuid.uuid4().hex[:10]}"
    try:
        yield client, stream
    finally:
        await client.delete(stream)
        await client.aclose()


@asynccontextmanager
async def running_writer(
    redis: aioredis.Redis, pool: asyncpg.Pool, stream: str
) -> AsyncIterator[tuple[TickReceiver, StreamWriter, asyncio.Task[None]]]:
    """A receiver and a running stream writer on ``stream``; the writer is stopped on exit."""
    receiver = TickReceiver(redis, stream=stream, max_entries=100_000, local_max_frames=100)
    writer = StreamWriter(redis, pool, stream=stream, block_ms=20)
    task = asyncio.create_task(writer.run())
    try:
        yield receiver, writer, task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
