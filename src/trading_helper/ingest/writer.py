"""The database writer: Redis stream -> COPY into tick_data, exactly once.

Reads entries with a consumer group, writes their ticks and the id of the last entry in one
transaction (:class:`~trading_helper.storage.ticks.TickWriter`), and only then acknowledges
them. After a crash the entries it had read but not acknowledged are delivered again:

* crashed before the commit: nothing of them is in the database, so they are written now;
* crashed after the commit, before the acknowledgement: their ids are <= the committed offset
  in ``ingest_offsets``, so they are acknowledged without writing. No tick is written twice.

Batches form by themselves: while one batch commits, the next frames accumulate in the stream
and are read together (low latency at low rates, large COPYs at high rates). The next batch is
decoded and prepared (validation, volume increments, rows) while the previous one commits, so
Python's work overlaps the database's.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from trading_helper.errors import DatabaseUnavailable
from trading_helper.ingest import keys, metrics
from trading_helper.ingest.codec import Record
from trading_helper.ingest.stream import decode_entry, parse_id
from trading_helper.ingest.volume import to_us
from trading_helper.storage import queries
from trading_helper.storage.ticks import PreparedBatch, StreamOffset, TickWriter, VolumeReset

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WriterStats:
    written: int = 0
    batches: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    skipped_committed: int = 0
    last_commit_at: datetime | None = None
    db_down_since: float | None = None
    #: receive -> commit lag of every tick written (seconds), kept only when ``record_lags``
    lags: list[float] = field(default_factory=list)


class StreamWriter:
    def __init__(self, redis: aioredis.Redis, pool: asyncpg.Pool, *, stream: str,
                 consumer: str = "writer", entries_per_read: int = 500, block_ms: int = 50,
                 max_ticks_per_batch: int = 20_000, record_lags: bool = False) -> None:
        self.redis = redis
        self.pool = pool
        self.stream = stream
        self.consumer = consumer
        self.entries_per_read = entries_per_read
        self.block_ms = block_ms
        self.max_ticks_per_batch = max_ticks_per_batch
        self.record_lags = record_lags
        self.stats = WriterStats()
        self._tick_writer: TickWriter | None = None
        self._committed: tuple[int, int] = (0, 0)
        self._since_trim = 0
        self._inflight: asyncio.Task[None] | None = None

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, keys.WRITER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _open_db(self) -> TickWriter:
        delay = 0.2
        while True:
            try:
                writer = await TickWriter.open(self.pool)
                async with self.pool.acquire() as conn:
                    committed = await conn.fetchval(queries.GET_OFFSET, self.stream)
                self._committed = parse_id(committed) if committed else (0, 0)
                self._db_back()
                return writer
            except (DatabaseUnavailable, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self._db_failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def run(self, *, stop_when_idle: bool = False) -> None:
        """Write until cancelled (or, with ``stop_when_idle``, until the stream has nothing new)."""
        try:
            await self._run(stop_when_idle)
        finally:
            if self._inflight is not None:
                self._inflight.cancel()
                await asyncio.gather(self._inflight, return_exceptions=True)
                self._inflight = None

    async def _run(self, stop_when_idle: bool) -> None:
        self._tick_writer = await self._open_db()
        # First our own pending entries (read before a crash or a Redis outage, not acknowledged),
        # walking the pending list by id, then new entries (">"). The pending list is only
        # walked with nothing in flight: an in-flight batch is pending too and must not be re-read.
        read_from = "0"
        redis_delay = 0.2
        while True:
            pending_phase = read_from != ">"
            try:
                if pending_phase:
                    await self._finish_inflight()
                    if read_from == "0":
                        await self._ensure_group()
                reply: Any = await self.redis.xreadgroup(
                    keys.WRITER_GROUP, self.consumer, {self.stream: read_from},
                    count=self.entries_per_read, block=None if pending_phase else self.block_ms)
                redis_delay = 0.2
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost the stream (restarted without persistence)
                    log.error("tick stream %s or its group disappeared; recreating it", self.stream)
                    read_from = "0"
                    continue
                raise
            except (RedisError, OSError) as exc:
                log.warning("Redis read failed (%s); retrying in %.1f s", exc, redis_delay)
                await asyncio.sleep(redis_delay + random.random() * 0.1)
                redis_delay = min(redis_delay * 2, 5.0)
                read_from = "0"
                continue
            entries = reply[0][1] if reply else []
            if not entries:
                await self._finish_inflight()
                if pending_phase:
                    read_from = ">"
                    continue
                if stop_when_idle:
                    return
                continue
            if pending_phase:
                last = entries[-1][0]
                read_from = last.decode() if isinstance(last, bytes) else str(last)
            await self._handle(entries)

    async def _handle(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> None:
        """Prepare this read's batch while the previous batch commits, then hand it on."""
        assert self._tick_writer is not None
        ids: list[bytes] = []
        items: list[Record | VolumeReset] = []
        malformed = 0
        last_new: str | None = None
        for entry_id, fields in entries:
            ids.append(entry_id)
            if parse_id(entry_id) <= self._committed:
                self.stats.skipped_committed += 1  # committed before a crash, not yet acknowledged
                continue
            decoded = decode_entry(entry_id, fields)
            last_new = decoded.entry_id
            if decoded.malformed:
                malformed += 1
            else:
                items.extend(decoded.items)
        batch = await self._tick_writer.prepare_batch(items) if last_new is not None else None
        await self._finish_inflight()
        if malformed:
            self.stats.rejected["malformed_entry"] += malformed
            metrics.TICKS_REJECTED.labels("malformed_entry").inc(malformed)
        if batch is None or last_new is None:
            await self._ack(ids)
            return
        self._inflight = asyncio.create_task(self._commit_and_ack(batch, last_new, ids, items))

    async def _finish_inflight(self) -> None:
        if self._inflight is not None:
            task, self._inflight = self._inflight, None
            await task

    async def _commit_and_ack(self, batch: PreparedBatch, last_id: str, ids: list[bytes],
                              items: list[Record | VolumeReset]) -> None:
        assert self._tick_writer is not None
        delay = 0.2
        while True:  # the same prepared batch until it commits: later batches build on its volume state
            try:
                result = await self._tick_writer.commit(batch, StreamOffset(self.stream, last_id))
                break
            except (DatabaseUnavailable, OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
                metrics.WRITE_FAILURES.labels(type(exc).__name__).inc()
                self._db_failed(exc)
                await asyncio.sleep(delay + random.random() * 0.1)
                delay = min(delay * 2, 5.0)
        self._db_back()
        now = datetime.now(UTC)
        self._committed = parse_id(last_id)
        self.stats.written += result.written
        self.stats.batches += 1
        self.stats.last_commit_at = now
        for reason, n in result.rejected.items():
            self.stats.rejected[reason] += n
            metrics.TICKS_REJECTED.labels(reason).inc(n)
        metrics.TICKS_WRITTEN.inc(result.written)
        metrics.BATCH_TICKS.observe(result.written)
        records = [r for r in items if not isinstance(r, VolumeReset)]
        if records:
            now_us = to_us(now)
            metrics.COMMIT_LAG.observe((now_us - records[-1][1]) / 1e6)
            metrics.EXCHANGE_LAG.observe((now_us - records[-1][0]) / 1e6)
            if self.record_lags:
                self.stats.lags.extend((now_us - r[1]) / 1e6 for r in records)
        await self._ack(ids)

    async def _ack(self, ids: list[bytes]) -> None:
        """Acknowledge, and trim what is committed; a failure here is repaired by the offset check."""
        try:
            await self.redis.xack(self.stream, keys.WRITER_GROUP, *ids)
            self._since_trim += len(ids)
            if self._since_trim >= 1000:
                self._since_trim = 0
                ms, seq = self._committed
                await self.redis.xtrim(self.stream, minid=f"{ms}-{seq + 1}", approximate=True)
        except (RedisError, OSError) as exc:
            log.warning("acknowledging %d entries failed (%s); they will be skipped as committed", len(ids), exc)

    def committed_through(self, entry_id: bytes | str) -> bool:
        """True once everything up to ``entry_id`` is committed."""
        return self._committed >= parse_id(entry_id)

    def _db_failed(self, exc: BaseException) -> None:
        if self.stats.db_down_since is None:
            self.stats.db_down_since = time.monotonic()
            log.error("database unavailable (%s): ticks wait in the Redis stream", exc)

    def _db_back(self) -> None:
        if self.stats.db_down_since is not None:
            log.warning("database reachable again after %.1f s; draining the stream",
                        time.monotonic() - self.stats.db_down_since)
            self.stats.db_down_since = None

    def status(self) -> dict[str, object]:
        return {
            "written": self.stats.written,
            "batches": self.stats.batches,
            "rejected": dict(self.stats.rejected),
            "db_down": self.stats.db_down_since is not None,
            "last_commit_at": self.stats.last_commit_at.isoformat() if self.stats.last_commit_at else None,
        }
