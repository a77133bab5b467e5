"""``trading-helper bench ingest``: simulator frames through the real path, against raw COPY.

Phase 1 (throughput): N simulated ticks, in frames, go through the receiver (one Redis stream
entry per frame, quotes, fan-out), the stream writer (consumer group, COPY, offset commit,
acknowledgement) into tick_data, as fast as they can. Phase 2 (reference): the same rows are
COPYed straight into a plain table with the same columns and index, in batches of 10,000 (the
hardware's pace in the same run). Phase 3 (latency): ticks paced at ``--paced-rate`` per second
for ``--paced-seconds``; receive-to-commit latency per tick. Every tick carries its sequence
number (in ``bid_qty``), so lost and duplicated ticks are counted from the table itself.

The scratch database takes the server's flavour (``flavour`` in the result): on a TimescaleDB
server tick_data is a hypertable while the reference stays a plain table with tick_data's
columns and index (the hardware's pace, not TimescaleDB's).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from trading_helper.bench.scratch import scratch_database
from trading_helper.brokers.sim import SimFeed, sim_instruments
from trading_helper.config import Settings
from trading_helper.ingest.lags import LagHistograms, mean, percentile
from trading_helper.ingest.receiver import TickReceiver
from trading_helper.ingest.writer import StreamWriter
from trading_helper.models import Tick
from trading_helper.storage.instruments import lookup_tokens, sync_instruments
from trading_helper.storage.migrate import current_flavour
from trading_helper.storage.ticks import TICK_COLUMNS


async def _feed(settings: Settings, pool: asyncpg.Pool, instruments: int) -> SimFeed:
    items = sim_instruments(instruments)
    async with pool.acquire() as conn:
        await sync_instruments(conn, "sim", items)
        mapping = await lookup_tokens(conn, "sim", [i.broker_ids["sim"] for i in items])
    feed = SimFeed(settings)
    await feed.subscribe(mapping)
    return feed


def _frames(feed: SimFeed, total: int, per_frame: int, first_seq: int) -> list[list[Tick]]:
    frames, seq = [], first_seq
    while seq < first_seq + total:
        frame = feed.make_frame(min(per_frame, first_seq + total - seq))
        for t in frame:
            t.bid_quantity = seq
            seq += 1
        frames.append(frame)
    return frames


async def _drain(writer: StreamWriter, target: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while writer.stats.written + sum(writer.stats.rejected.values()) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"writer committed {writer.stats.written} of {target} ticks in {timeout_s} s")
        await asyncio.sleep(0.005)


async def _raw_copy(pool: asyncpg.Pool, frames: list[list[Tick]]) -> float:
    rows = [
        (
            t.exchange_ts,
            t.instrument_id,
            t.last_price,
            t.last_quantity,
            t.volume,
            0,
            t.average_price,
            t.open_interest,
            t.bid_price,
            t.bid_quantity,
            t.ask_price,
            t.ask_quantity,
            t.received_ts,
            t.exchange_ts,
        )
        for f in frames
        for t in f
    ]
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE raw_copy_reference (LIKE tick_data INCLUDING DEFAULTS)")
        await conn.execute("CREATE INDEX ON raw_copy_reference (instrument_id, time DESC)")
        started = time.perf_counter()
        for i in range(0, len(rows), 10_000):
            await conn.copy_records_to_table(
                "raw_copy_reference", records=rows[i : i + 10_000], columns=TICK_COLUMNS
            )
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE raw_copy_reference")
    return len(rows) / elapsed


async def run_ingest_bench(
    settings: Settings, *, instruments: int, ticks: int, per_frame: int, paced_rate: int, paced_seconds: float
) -> dict[str, Any]:
    stream = f"th:bench:{uuid.uuid4().hex[:8]}"
    redis = aioredis.Redis.from_url(settings.REDIS_URL)
    async with scratch_database(settings.DATABASE_URL) as dsn:
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
        assert pool is not None
        try:
            feed = await _feed(settings, pool, instruments)
            frames = _frames(feed, ticks, per_frame, 0)
            # keys of its own: a running service's quotes and live channel are not touched
            receiver = TickReceiver(
                redis,
                stream=stream,
                max_entries=10_000_000,
                local_max_frames=100_000,
                quotes_key=f"{stream}:quotes",
                live_channel=f"{stream}:live",
            )
            writer = StreamWriter(redis, pool, stream=stream, entries_per_read=200)
            writer_task = asyncio.create_task(writer.run())
            started = time.perf_counter()
            for frame in frames:
                await receiver.on_ticks(frame)
            await _drain(writer, ticks, timeout_s=600)
            seconds = time.perf_counter() - started
            batches = writer.stats.batches
            async with pool.acquire() as conn:
                flavour = await current_flavour(conn)

            raw_rate = await _raw_copy(pool, frames)

            # paced phase: 1,000 ticks/s in frames every 50 ms, latency per tick
            writer.record_lags = True
            lags = writer.stats.lags = LagHistograms()
            per_tick_frame = max(1, int(paced_rate * 0.05))
            paced_frames = int(paced_seconds / 0.05)
            seq = ticks
            t0 = time.perf_counter()
            for k in range(paced_frames):
                [frame] = _frames(feed, per_tick_frame, per_tick_frame, seq)
                now = datetime.now(UTC)
                for t in frame:
                    t.received_ts = now
                seq += len(frame)
                await receiver.on_ticks(frame)
                await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.05 - time.perf_counter()))
            await _drain(writer, seq, timeout_s=120)
            writer_task.cancel()

            row = await pool.fetchrow(
                "SELECT count(*) AS n, count(DISTINCT bid_qty) AS d FROM "
                "(SELECT bid_qty FROM tick_data UNION ALL SELECT bid_qty FROM quote_updates) AS stored"
            )
            assert row is not None
            sent = seq
            lost = sent - row["d"]
            duplicated = row["n"] - row["d"]
        finally:
            await pool.close()
            await redis.delete(stream, f"{stream}:quotes")
            await redis.aclose()
    rate = ticks / seconds
    return {
        "ticks": ticks,
        "instruments": instruments,
        "ticks_per_frame": per_frame,
        "flavour": flavour,
        "batches": batches,
        "seconds": round(seconds, 3),
        "ticks_per_s": round(rate),
        "raw_copy_rows_per_s": round(raw_rate),
        "ratio_to_raw_copy": round(rate / raw_rate, 3),
        "paced_rate_per_s": paced_rate,
        # receive to commit of the paced phase, in whole milliseconds (ingest/lags.py)
        "paced_ticks": sum(lags.total.values()),
        "latency_ms_p50": percentile(lags.total, 0.5),
        "latency_ms_p99": percentile(lags.total, 0.99),
        "latency_ms_mean": round(m, 2) if (m := mean(lags.total)) is not None else None,
        "latency_stages_ms": lags.summary(),
        "lost": lost,
        "duplicated": duplicated,
        "rejected": dict(writer.stats.rejected) | dict(receiver.rejected),
    }
