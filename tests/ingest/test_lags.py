"""Receive-to-commit lag by stage: the histograms' arithmetic, and a real writer's stages adding up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np

from tests.fakes.sink import wait_until
from tests.ingest.helpers import numbered_frames, redis_stream, sim_feed
from tests.storage.helpers import reset_market_data
from trading_helper.ingest.lags import CAP_MS, STAGES, LagHistograms, from_json, mean, percentile
from trading_helper.ingest.receiver import TickReceiver
from trading_helper.ingest.writer import StreamWriter


def _us(*ms: float) -> np.ndarray:
    return (np.asarray(ms) * 1000).astype(np.int64)


def test_each_tick_is_split_at_accept_read_and_commit_start() -> None:
    lags = LagHistograms()
    # two ticks received at 0 and 10 ms, accepted at 12, read at 40; the commit runs 100 -> 130
    lags.add(_us(0, 10), _us(12, 12), _us(40, 40), 100_000, 130_000)
    assert lags.total == {130: 1, 120: 1}
    assert lags.stages["collect"] == {12: 1, 2: 1}
    assert lags.stages["stream"] == {28: 2}
    assert lags.stages["batch"] == {60: 2}
    assert lags.stages["commit"] == {30: 2}


def test_unknown_stages_count_only_the_total_and_slow_ticks_the_cap() -> None:
    lags = LagHistograms()
    lags.add(_us(0), np.zeros(0, np.int64), np.zeros(0, np.int64), 0, (CAP_MS + 5_000) * 1000)
    assert lags.total == {CAP_MS: 1}
    assert all(not lags.stages[s] for s in STAGES)


def test_take_merge_and_json_keep_every_count() -> None:
    a, b = LagHistograms(), LagHistograms()
    a.add(_us(0, 0, 0), _us(1, 1, 1), _us(2, 2, 2), 3_000, 7_000)
    b.add(_us(0), _us(5), _us(5), 5_000, 9_000)
    merged = LagHistograms()
    merged.merge(a.take())
    merged.merge(from_json(b.as_json()))
    assert not a.total and all(not h for h in a.stages.values())
    assert merged.total == {7: 3, 9: 1}
    assert merged.stages["commit"] == {4: 4}
    assert percentile(merged.total, 0.5) == 7.0 and percentile(merged.total, 0.99) == 7.0
    assert percentile(merged.total, 1.0) == 9.0
    assert mean(merged.total) == 7.5
    assert merged.summary()["stream"] == {"p50": 1.0, "p99": 1.0}
    assert percentile(LagHistograms().total, 0.5) is None


async def test_a_writers_stages_cover_every_tick_and_see_where_it_waited(
    db_pool: asyncpg.Pool, redis_url: str
) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool)
    async with redis_stream(redis_url) as (redis, stream):
        receiver = TickReceiver(redis, stream=stream, max_entries=100_000, local_max_frames=100)
        writer = StreamWriter(redis, db_pool, stream=stream, block_ms=20, record_lags=True)
        task = asyncio.create_task(writer.run())
        try:
            frames = numbered_frames(feed, 10, 30)
            for frame in frames:
                # received 300 ms before the receiver takes them: the collect stage shows it
                received = datetime.now(UTC) - timedelta(milliseconds=300)
                for t in frame:
                    t.received_ts = received
                await receiver.on_ticks(frame)
                await asyncio.sleep(0.01)
            await receiver.flush()
            await wait_until(lambda: writer.stats.written == 300, within_s=30)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    lags = writer.stats.lags
    assert lags is not None
    assert sum(lags.total.values()) == 300
    assert all(sum(lags.stages[s].values()) == 300 for s in STAGES)
    assert min(lags.stages["collect"]) >= 299  # the entry id is taken in whole milliseconds
    assert min(lags.total) >= 300
    # the stages' sums add up to the total's sum (each tick's stages add up, to rounding)
    stage_sum = sum(ms * n for s in STAGES for ms, n in lags.stages[s].items())
    total_sum = sum(ms * n for ms, n in lags.total.items())
    assert abs(stage_sum - total_sum) <= 2 * 300
