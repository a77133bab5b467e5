"""The database writer: Redis stream -> COPY into tick_data, exactly once.

Reads entries with a consumer group, turns their ticks into rows (:mod:`.batch`, with the state
of :class:`~.prepare.BatchPreparer`), writes the rows and the id of the last entry in one
transaction (:class:`~trading_helper.storage.ticks.TickStore`), and only then acknowledges
them. After a crash the entries it had read but not acknowledged are delivered again:

* crashed before the commit: nothing of them is in the database, so they are written now;
* crashed after the commit, before the acknowledgement: their ids are <= the committed offset
  in ``ingest_offsets``, so they are acknowledged without writing. No tick is written twice.

Batches form by themselves: while one batch commits, the next frames accumulate in the stream
and are read together (low latency at low rates, large COPYs at high rates). The next batch is
decoded and prepared (validation, volume increments, rows) while the previous one commits, so
Python's work overlaps the database's.

Database errors, by kind (:mod:`trading_helper.storage.sqlstate`): a lost connection and a
refusal for resources (disk full, out of memory, too many connections, a cancelled statement, a
lock conflict) are retried with the same batch and a capped backoff, logged once per episode and
counted; rows the database refuses are dead-lettered by :meth:`TickStore.commit` while the rest
of the batch commits. Anything else is logged with its error and re-raised (the service's
supervisor restarts the task; :meth:`StreamWriter.run` can be called again on the same writer).

Entries carry their place in the receiver's run (:mod:`.stream`); an entry that does not follow
the last committed one of its run means entries were lost from the stream (Redis restarted
without persistence): their ticks are counted as ``lost``, committed with the offset, and logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from trading_helper.errors import DatabaseBusy, DatabaseUnavailable
from trading_helper.ingest import keys, metrics
from trading_helper.ingest.batch import Chunk, TickBatch
from trading_helper.ingest.prepare import BatchPreparer
from trading_helper.ingest.redisconn import RedisDurability, cancellable, check_redis_durability
from trading_helper.ingest.stream import EntrySeq, decode_entry, parse_id
from trading_helper.ingest.volume import to_us
from trading_helper.storage import queries
from trading_helper.storage.sqlstate import retryable
from trading_helper.storage.ticks import RunPosition, StreamOffset, TickStore

log = logging.getLogger(__name__)

T = TypeVar("T")
_BACKOFF_START_S = 0.2
_BACKOFF_CAP_S = 5.0


@dataclass(slots=True, frozen=True)
class StreamGap:
    """Entries of a receiver run missing from the stream: entries first..last, ``ticks`` ticks."""

    run: str
    first: int
    last: int
    ticks: int


@dataclass(slots=True)
class WriterStats:
    written: int = 0
    batches: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    skipped_committed: int = 0
    last_commit_at: datetime | None = None
    db_down_since: float | None = None
    #: since when the database refuses writes for resources (disk, memory, connections, cancel, locks)
    db_busy_since: float | None = None
    #: writes refused that way (each retried)
    db_busy_errors: int = 0
    last_db_error: str | None = None
    #: rows the database refused, stored in tick_rejects
    dead_lettered: int = 0
    #: ticks in entries lost from the stream (found by the receiver's sequence)
    lost: int = 0
    #: the unexpected error that ended the last run, if it ended so
    error: str | None = None
    #: receive -> commit lag of every tick written (seconds), kept only when ``record_lags``
    lags: list[float] = field(default_factory=list)


class StreamWriter:
    def __init__(
        self,
        redis: aioredis.Redis,
        pool: asyncpg.Pool,
        *,
        stream: str,
        consumer: str = "writer",
        entries_per_read: int = 500,
        block_ms: int = 50,
        max_ticks_per_batch: int = 20_000,
        record_lags: bool = False,
    ) -> None:
        self.redis = redis
        self.pool = pool
        self.stream = stream
        self.consumer = consumer
        self.entries_per_read = entries_per_read
        self.block_ms = block_ms
        self.max_ticks_per_batch = max_ticks_per_batch
        self.record_lags = record_lags
        self.stats = WriterStats()
        self._preparer: BatchPreparer | None = None
        self._store: TickStore | None = None
        self._committed: tuple[int, int] = (0, 0)
        self._since_trim = 0
        self._inflight: asyncio.Task[None] | None = None
        #: receiver run -> (entry number, ticks) of its last entry prepared (committed or in flight)
        self._runs: dict[str, tuple[int, int]] = {}
        self.durability: RedisDurability | None = None

    async def _ensure_group(self) -> None:
        try:
            await cancellable(self.redis.xgroup_create(self.stream, keys.WRITER_GROUP, id="0", mkstream=True))
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _with_db_retry(self, call: Callable[[], Awaitable[T]], *, ends_episode: bool = True) -> T:
        """``call()`` until it succeeds, retrying lost connections and refusals for resources
        with a capped backoff; any other error is raised."""
        delay = _BACKOFF_START_S
        while True:
            try:
                result = await call()
            except Exception as exc:
                wrapped = retryable(exc, "database call failed")
                if wrapped is None:
                    raise
                self._db_failed(wrapped)
                await asyncio.sleep(delay + random.random() * 0.1)
                delay = min(delay * 2, _BACKOFF_CAP_S)
                continue
            if ends_episode:
                self._db_back()
            return result

    async def _load_db_state(self) -> tuple[BatchPreparer, TickStore]:
        store = await TickStore.open(self.pool)
        preparer = await BatchPreparer.open(self.pool)
        async with self.pool.acquire() as conn:
            committed = await conn.fetchval(queries.GET_OFFSET, self.stream)
            runs = await conn.fetch(queries.GET_SEQUENCES, self.stream)
        self._committed = parse_id(committed) if committed else (0, 0)
        self._runs = {r[0]: (r[1], r[2]) for r in runs}
        return preparer, store

    async def run(self, *, stop_when_idle: bool = False) -> None:
        """Write until cancelled (or, with ``stop_when_idle``, until the stream has nothing new).

        An unexpected error is logged with its cause and re-raised; calling ``run`` again
        resumes from the committed offset (the statistics carry on)."""
        self._inflight = None
        try:
            await self._run(stop_when_idle)
        except Exception as exc:
            self.stats.error = f"{type(exc).__name__}: {exc}"
            log.error(
                "tick writer for stream %s stopped by an unexpected error (its ticks wait in the "
                "stream; a restart resumes from the committed offset): %s",
                self.stream,
                exc,
                exc_info=exc,
            )
            raise
        finally:
            if self._inflight is not None:
                self._inflight.cancel()
                await asyncio.gather(self._inflight, return_exceptions=True)
                self._inflight = None

    async def _run(self, stop_when_idle: bool) -> None:
        self.durability = await check_redis_durability(self.redis)
        self._preparer, self._store = await self._with_db_retry(self._load_db_state)
        self.stats.error = None
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
                reply: Any = await cancellable(
                    self.redis.xreadgroup(
                        keys.WRITER_GROUP,
                        self.consumer,
                        {self.stream: read_from},
                        count=self.entries_per_read,
                        block=None if pending_phase else self.block_ms,
                    )
                )
                redis_delay = 0.2
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost the stream (restarted without persistence)
                    log.error(
                        "tick stream %s or its group disappeared; recreating it (entries lost with "
                        "it are counted from the receiver's sequence)",
                        self.stream,
                    )
                    read_from = "0"
                    self.durability = await check_redis_durability(self.redis)
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
        assert self._preparer is not None
        preparer = self._preparer
        ids: list[bytes] = []
        chunks: list[Chunk] = []
        starts: list[int] = []  # index of each entry's first record, per entry in ``names``
        names: list[str] = []
        records = 0
        malformed = 0
        last_new: str | None = None
        runs: dict[str, RunPosition] = {}
        gaps: list[StreamGap] = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            if parse_id(entry_id) <= self._committed:
                self.stats.skipped_committed += 1  # committed before a crash, not yet acknowledged
                continue
            decoded = decode_entry(entry_id, fields)
            last_new = decoded.entry_id
            if decoded.seq is not None:
                self._follow(decoded.seq, decoded.ticks, runs, gaps)
            if decoded.chunk is None:
                malformed += 1
            else:
                starts.append(records)
                names.append(decoded.entry_id)
                chunks.append(decoded.chunk)
                records += decoded.ticks
        batch = None
        if last_new is not None:
            batch = await self._with_db_retry(
                lambda: preparer.prepare(chunks, entry_starts=starts, entry_ids=names), ends_episode=False
            )
        await self._finish_inflight()
        if malformed:
            self.stats.rejected["malformed_entry"] += malformed
            metrics.TICKS_REJECTED.labels("malformed_entry").inc(malformed)
        if batch is None or last_new is None:
            await self._ack(ids)
            return
        offset = StreamOffset(self.stream, last_new, tuple(runs.values()))
        self._inflight = asyncio.create_task(self._commit_and_ack(batch, offset, ids, gaps))

    def _follow(self, seq: EntrySeq, ticks: int, runs: dict[str, RunPosition], gaps: list[StreamGap]) -> None:
        """Move the run's position to this entry; a jump over entries is a gap of lost ticks."""
        prev = self._runs.get(seq.run)
        prev_no, prev_ticks = prev if prev is not None else (0, 0)
        if seq.entry_no <= prev_no:
            return  # an entry of this run already taken (re-sent after a lost reply)
        lost = 0
        if seq.entry_no > prev_no + 1:
            lost = max(0, seq.ticks - ticks - prev_ticks)
            gaps.append(StreamGap(seq.run, prev_no + 1, seq.entry_no - 1, lost))
        self._runs[seq.run] = (seq.entry_no, seq.ticks)
        before = runs.get(seq.run)
        runs[seq.run] = RunPosition(seq.run, seq.entry_no, seq.ticks, lost + (before.lost if before else 0))

    async def _finish_inflight(self) -> None:
        if self._inflight is not None:
            task, self._inflight = self._inflight, None
            await task

    async def _commit_and_ack(
        self, batch: TickBatch, offset: StreamOffset, ids: list[bytes], gaps: list[StreamGap]
    ) -> None:
        store = self._store
        assert store is not None
        # the same prepared batch until it commits: later batches build on its volume state
        done = await self._with_db_retry(lambda: store.commit(batch.write, offset))
        if done.already_committed:
            log.warning(
                "entries up to %s were already committed by an earlier try whose reply was lost; "
                "not written again",
                offset.last_id,
            )
        dead = done.dead_letters
        written = batch.rows - len(dead)
        now = datetime.now(UTC)
        self._committed = parse_id(offset.last_id)
        self.stats.written += written
        self.stats.batches += 1
        self.stats.last_commit_at = now
        for reason, n in batch.rejected.items():
            self.stats.rejected[reason] += n
            metrics.TICKS_REJECTED.labels(reason).inc(n)
        if dead:
            self.stats.dead_lettered += len(dead)
            metrics.TICKS_DEAD_LETTERED.inc(len(dead))
            log.error(
                "%d tick rows refused by the database went to tick_rejects (first: entry %s, %r); "
                "the rest of the batch was written",
                len(dead),
                dead[0].entry_id,
                dead[0].reason,
            )
        for gap in gaps:
            self.stats.lost += gap.ticks
            metrics.TICKS_LOST.inc(gap.ticks)
            log.error(
                "tick stream %s lost entries %d..%d of receiver run %s (%d ticks) before they were "
                "written (Redis restarted without persistence?)",
                self.stream,
                gap.first,
                gap.last,
                gap.run,
                gap.ticks,
            )
        metrics.TICKS_WRITTEN.inc(written)
        metrics.BATCH_TICKS.observe(written)
        received = batch.received_us
        if len(received):
            now_us = to_us(now)
            metrics.COMMIT_LAG.observe((now_us - int(received[-1])) / 1e6)
            metrics.EXCHANGE_LAG.observe((now_us - batch.last_exchange_us) / 1e6)
            if self.record_lags:
                self.stats.lags.extend(((now_us - received) / 1e6).tolist())
        await self._ack(ids)

    async def _ack(self, ids: list[bytes]) -> None:
        """Acknowledge, and trim what is committed; a failure here is repaired by the offset check."""
        try:
            await cancellable(self.redis.xack(self.stream, keys.WRITER_GROUP, *ids))
            self._since_trim += len(ids)
            if self._since_trim >= 1000:
                self._since_trim = 0
                ms, seq = self._committed
                await cancellable(self.redis.xtrim(self.stream, minid=f"{ms}-{seq + 1}", approximate=True))
        except (RedisError, OSError) as exc:
            log.warning(
                "acknowledging %d entries failed (%s); they will be skipped as committed", len(ids), exc
            )

    def committed_through(self, entry_id: bytes | str) -> bool:
        """True once everything up to ``entry_id`` is committed."""
        return self._committed >= parse_id(entry_id)

    def _db_failed(self, exc: DatabaseUnavailable | DatabaseBusy) -> None:
        """Count a failed database call; log only the first of an episode."""
        stats = self.stats
        stats.last_db_error = str(exc)[:500]
        if isinstance(exc, DatabaseBusy):
            stats.db_busy_errors += 1
            metrics.DB_RESOURCE_ERRORS.labels(exc.sqlstate or "unknown").inc()
            if stats.db_busy_since is None:
                stats.db_busy_since = time.monotonic()
                metrics.WRITER_DB_BUSY.set(1)
                log.error(
                    "database refuses tick writes (%s): retrying with backoff; ticks wait in the Redis "
                    "stream",
                    exc,
                )
            return
        metrics.WRITE_FAILURES.labels(type(exc.__cause__ or exc).__name__).inc()
        if stats.db_down_since is None:
            stats.db_down_since = time.monotonic()
            log.error("database unavailable (%s): ticks wait in the Redis stream", exc)

    def _db_back(self) -> None:
        stats = self.stats
        if stats.db_down_since is not None:
            log.warning(
                "database reachable again after %.1f s; draining the stream",
                time.monotonic() - stats.db_down_since,
            )
            stats.db_down_since = None
        if stats.db_busy_since is not None:
            log.warning(
                "database accepts tick writes again after %.1f s; draining the stream",
                time.monotonic() - stats.db_busy_since,
            )
            stats.db_busy_since = None
            metrics.WRITER_DB_BUSY.set(0)

    def status(self) -> dict[str, object]:
        stats = self.stats
        return {
            "written": stats.written,
            "batches": stats.batches,
            "rejected": dict(stats.rejected),
            "dead_lettered": stats.dead_lettered,
            "lost": stats.lost,
            "db_down": stats.db_down_since is not None,
            "db_busy": stats.db_busy_since is not None,
            "db_busy_errors": stats.db_busy_errors,
            "last_db_error": stats.last_db_error,
            "error": stats.error,
            "redis_persistence": self.durability.persistence if self.durability else None,
            "redis_persistence_detail": self.durability.detail if self.durability else None,
            "last_commit_at": stats.last_commit_at.isoformat() if stats.last_commit_at else None,
        }
