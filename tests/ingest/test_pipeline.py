from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from tests.ingest.helpers import (
    day_volumes,
    numbered_frames,
    redis_stream,
    sim_feed,
    stored_day_volumes,
    stored_sequence_numbers,
)
from tests.storage.helpers import reset_market_data
from trading_helper.ingest.codec import decode_quote, decode_ticks, encode_quote
from trading_helper.ingest.receiver import SEND_EVERY_S, TickReceiver
from trading_helper.ingest.stream import decode_seq
from trading_helper.ingest.writer import StreamWriter
from trading_helper.models import Tick


async def test_frames_land_once_and_bad_input_is_counted(db_pool: asyncpg.Pool, redis_url: str) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool)
    async with redis_stream(redis_url) as (redis, stream):
        pubsub = redis.pubsub()
        await pubsub.subscribe(f"{stream}:live")
        receiver = TickReceiver(
            redis,
            stream=stream,
            max_entries=100_000,
            local_max_frames=100,
            quotes_key=f"{stream}:quotes",
            live_channel=f"{stream}:live",
        )
        frames = numbered_frames(feed, 40, 25)
        now = datetime.now(UTC)
        stranger = Tick(
            instrument_id=987_654, exchange_ts=now, received_ts=now, last_price=10.0, bid_quantity=-7
        )
        naive = Tick(
            instrument_id=frames[0][0].instrument_id,
            exchange_ts=now.replace(tzinfo=None),
            received_ts=now,
            last_price=10.0,
        )
        for n, frame in enumerate(frames):
            if n == 10:
                await redis.xadd(stream, {b"t": b"not a tick payload"})  # truncated/garbage entry
                await redis.xadd(stream, {b"q": b"unknown field"})
                frame = [*frame, stranger, naive]
            await receiver.on_ticks(frame)
        await receiver.flush()  # quotes are written at most every 100 ms; a quiet feed flushes them
        writer = StreamWriter(redis, db_pool, stream=stream, entries_per_read=7)
        await writer.run(stop_when_idle=True)
        message = None
        for _ in range(20):  # the first read may only be the subscription's confirmation
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                break
        quote = await redis.hget(f"{stream}:quotes", str(frames[-1][-1].instrument_id))
        quotes = await redis.hgetall(f"{stream}:quotes")
        await redis.delete(f"{stream}:quotes")
        await pubsub.aclose()
    rows, distinct = await stored_sequence_numbers(db_pool)
    assert rows == distinct == 40 * 25
    assert writer.stats.rejected == {"malformed_entry": 2, "unknown_instrument": 1}
    assert receiver.rejected == {"naive_timestamp": 1}
    assert message is not None and decode_ticks(message["data"])[0].bid_quantity == 0
    assert quote is not None and decode_quote(quote).instrument_id == frames[-1][-1].instrument_id
    # every instrument's latest quote is its last accepted tick packed on its own
    latest = {t.instrument_id: t for f in frames for t in f if t is not naive}
    latest[stranger.instrument_id] = stranger
    assert {int(k): v for k, v in quotes.items()} == {i: encode_quote(t) for i, t in latest.items()}


async def test_volume_increments_sum_to_the_day_volume(db_pool: asyncpg.Pool, redis_url: str) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool, 5)
    async with redis_stream(redis_url) as (redis, stream):
        receiver = TickReceiver(redis, stream=stream, max_entries=100_000, local_max_frames=100)
        frames = numbered_frames(feed, 30, 20)
        for frame in frames:
            await receiver.on_ticks(frame)
        await receiver.flush()  # frames handed in a burst go out together; the last may still wait
        await StreamWriter(redis, db_pool, stream=stream).run(stop_when_idle=True)
    assert await stored_day_volumes(db_pool) == day_volumes(frames)


async def test_frames_handed_in_a_burst_go_out_together_and_the_last_without_a_flush(
    db_pool: asyncpg.Pool, redis_url: str
) -> None:
    feed = await sim_feed(db_pool, 5)
    async with redis_stream(redis_url) as (redis, stream):
        # the grouping's clock stands still after the first send: however slowly this loop runs,
        # no frame of the burst comes SEND_EVERY_S after a send, so every one after the first waits
        # (on the real clock the last frame went out at once whenever the machine paused the loop
        # past SEND_EVERY_S before it, and nothing was left for the timer)
        receiver = TickReceiver(
            redis, stream=stream, max_entries=100_000, local_max_frames=100, monotonic=lambda: 1000.0
        )
        frames = numbered_frames(feed, 200, 10)
        for frame in frames:
            await receiver.on_ticks(frame)
        waiting = receiver.status()["local_queue_frames"], len(receiver._outbox)
        before = receiver.durable_at
        # no flush: the outbox's timer sends what the burst left within SEND_EVERY_S
        for _ in range(100):
            if not receiver._outbox and receiver.durable_at != before:
                break
            await asyncio.sleep(SEND_EVERY_S)
        entries = await redis.xrange(stream)
    assert waiting[0] == 0 and waiting[1] > 0, "the burst's last frames wait in the outbox, none held"
    assert not receiver._outbox and receiver.durable_at is not None and receiver.durable_at != before
    # every frame once, in order, with its place in the receiver's run
    assert [t.bid_quantity for _, f in entries for t in decode_ticks(f[b"u"])] == list(range(2000))
    seqs = [decode_seq(f[b"q"]) for _, f in entries]
    assert [(s.entry_no, s.ticks) for s in seqs if s is not None] == [(n, 10 * n) for n in range(1, 201)]
