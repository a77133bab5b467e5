"""The database writer: Redis stream -> COPY into tick_data, exactly once.

Reads entries with a consumer group, turns their ticks into rows (:mod:`.batch`, with the state
of :class:`~.prepare.BatchPreparer`), writes the rows and the id of the last entry in one
transaction (:class:`~trading_helper.storage.ticks.TickStore`), and only then acknowledges
them. After a crash the entries it had read but not acknowledged are delivered again:

* crashed before the commit: nothing of them is in the database, so they are written now;
* crashed after the commit, before the acknowledgement: their ids are <= the committed offset
  in ``ingest_offsets``, so they are acknowledged without writing. No tick is written twice.

Batches form by themselves: with nothing committing, what a read returns is committed at once
(low latency at low rates); while a batch commits, every read is decoded and prepared
(validation, volume increments, rows) as it arrives, so Python's work overlaps the database's,
and all of it is committed together when that commit is done (up to ``max_ticks_per_batch``),
so batches grow with the rate and each costs less per tick (statements, volume-state rows).
Under such a steady flow commits also start at least ``min_batch_interval_ms`` apart, so a
writer that keeps up does not fall into many small batches.

Database errors, by kind (:mod:`trading_helper.storage.sqlstate`): a lost connection and a
refusal for resources (disk full, out of memory, too many connections, a cancelled statement, a
lock conflict) are retried with the same batch and a capped backoff, logged once per episode and
counted; rows the database refuses are dead-lettered by :meth:`TickStore.commit` while the rest
of the batch commits. Anything else is logged with its error and re-raised (the service's
supervisor restarts the task; :meth:`StreamWriter.run` can be called again on the same writer).
What the writer counts and logs is :mod:`.writer_stats`.

Entries carry their place in the receiver's run (:mod:`.stream`); an entry that does not follow
the last committed one of its run means entries were lost from the stream (Redis restarted
without persistence): their ticks are counted as ``lost``, committed with the offset, and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from trading_helper.brokers.retry import backoff_delay
from trading_helper.errors import OffsetMoved
from trading_helper.ingest import keys
from trading_helper.ingest.batch import Chunk, TickBatch, merge_batches
from trading_helper.ingest.lags import LagHistograms
from trading_helper.ingest.prepare import BatchPreparer
from trading_helper.ingest.redisconn import RedisDurability, cancellable, check_redis_durability
from trading_helper.ingest.stream import EntrySeq, decode_entry, parse_id, stamp_entry_times
from trading_helper.ingest.writer_stats import StreamGap, WriterStats
from trading_helper.storage import queries
from trading_helper.storage.sqlstate import retryable
from trading_helper.storage.ticks import RunPosition, StreamOffset, TickStore

__all__ = ["StreamGap", "StreamWriter", "WriterStats"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_BACKOFF_S = (0.2, 5.0)  # retries of the database and of Redis reads: first delay, cap


@dataclass(slots=True)
class _OpenBatch:
    """Reads prepared and not yet committed: committed together, in one transaction."""

    batches: list[TickBatch] = field(default_factory=list)
    #: every entry id read into it (acknowledged once it is committed)
    ids: list[bytes] = field(default_factory=list)
    #: the last new entry's id (the offset committed with it)
    last_id: str = ""
    runs: dict[str, RunPosition] = field(default_factory=dict)
    gaps: list[StreamGap] = field(default_factory=list)
    ticks: int = 0
    #: some of it was read while a commit ran (a steady flow: the writer is not idle)
    busy: bool = False


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
        min_batch_interval_ms: int = 50,
        record_lags: bool = False,
    ) -> None:
        self.redis = redis
        self.pool = pool
        self.stream = stream
        self.consumer = consumer
        self.entries_per_read = entries_per_read
        self.block_ms = block_ms
        #: reads prepared while a commit runs join one batch up to this many ticks
        self.max_ticks_per_batch = max_ticks_per_batch
        #: under a steady flow (entries read while a commit runs), a commit starts at least this
        #: long after the previous one started, unless its batch is full: batches are then large
        #: enough that the per-batch work (statements, one volume-state row per instrument
        #: touched) stays small per tick, and a writer that keeps up does not fall into many tiny
        #: batches. A tick waits at most this long for it; entries that find the writer idle
        #: (low rates) are committed at once
        self.min_batch_interval_s = min_batch_interval_ms / 1000
        self._commit_started = 0.0
        self.record_lags = record_lags
        self.stats = WriterStats(lags=LagHistograms() if record_lags else None)
        self._preparer: BatchPreparer | None = None
        self._store: TickStore | None = None
        self._committed: tuple[int, int] = (0, 0)
        self._committed_id: str | None = None  # the offset as stored (None: no row yet)
        self._since_trim = 0
        self._inflight: asyncio.Task[None] | None = None
        self._open: _OpenBatch | None = None
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
        attempt = 0
        while True:
            try:
                result = await call()
            except Exception as exc:
                wrapped = retryable(exc, "database call failed")
                if wrapped is None:
                    raise
                self.stats.db_failed(wrapped)
                attempt += 1
                await asyncio.sleep(backoff_delay(attempt, *_BACKOFF_S))
                continue
            if ends_episode:
                self.stats.db_back()
            return result

    async def _load_db_state(self) -> tuple[BatchPreparer, TickStore]:
        store = await TickStore.open(self.pool)
        preparer = await BatchPreparer.open(self.pool)
        async with self.pool.acquire() as conn, conn.transaction():
            # taking the offset row waits for a commit of this stream still finishing on the
            # server (a writer killed after sending COMMIT), so what is read is what it committed
            committed = await conn.fetchval(queries.LOCK_OFFSET, self.stream)
            runs = await conn.fetch(queries.GET_SEQUENCES, self.stream)
        self._committed = parse_id(committed) if committed else (0, 0)
        self._committed_id = committed
        self._runs = {r[0]: (r[1], r[2]) for r in runs}
        return preparer, store

    async def run(self, *, stop_when_idle: bool = False) -> None:
        """Write until cancelled (or, with ``stop_when_idle``, until the stream has nothing new).

        An unexpected error is logged with its cause and re-raised; calling ``run`` again
        resumes from the committed offset (the statistics carry on)."""
        try:
            while True:
                self._inflight = None
                self._open = None  # prepared, never committed: read again from the pending list
                try:
                    await self._run(stop_when_idle)
                    return
                except OffsetMoved as exc:  # state read again (offset, volume), pending entries too
                    await self._drop_inflight()
                    self.stats.offsets_moved += 1
                    log.warning("tick writer: %s; reading the offset again and going on from it", exc)
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
            await self._drop_inflight()

    async def _drop_inflight(self) -> None:
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
        # walked with everything read before committed: a batch in flight or open is pending
        # too and must not be re-read.
        read_from = "0"
        redis_failures = 0
        while True:
            pending_phase = read_from != ">"
            try:
                if pending_phase:
                    await self._commit_all()
                    if read_from == "0":
                        await self._ensure_group()
                reply: Any = await cancellable(
                    self.redis.xreadgroup(
                        keys.WRITER_GROUP,
                        self.consumer,
                        {self.stream: read_from},
                        count=self.entries_per_read,
                        # an open batch waits for the commit in flight, not for new entries
                        block=None if pending_phase or self._open is not None else self.block_ms,
                    )
                )
                redis_failures = 0
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
                redis_failures += 1
                delay = backoff_delay(redis_failures, *_BACKOFF_S)
                log.warning("Redis read failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                read_from = "0"
                continue
            entries = reply[0][1] if reply else []
            if not entries:
                was_open = self._open is not None
                await self._finish_inflight()
                self._start_commit()
                if pending_phase:
                    await self._finish_inflight()
                    read_from = ">"
                elif stop_when_idle and not was_open:
                    await self._finish_inflight()
                    return
                continue
            if pending_phase:
                last = entries[-1][0]
                read_from = last.decode() if isinstance(last, bytes) else str(last)
            await self._handle(entries)
            if pending_phase:
                await self._commit_all()
                continue
            if self._open is not None and self._open.busy and self._open.ticks < self.max_ticks_per_batch:
                pause = self._commit_started + self.min_batch_interval_s - time.monotonic()
                if pause > 0:  # too soon after the last commit: what arrives meanwhile joins this batch
                    await asyncio.sleep(pause)
                    continue
            await self._finish_inflight()
            self._start_commit()

    async def _handle(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> None:
        """Prepare this read's entries into the open batch (while the previous batch commits)."""
        assert self._preparer is not None
        preparer = self._preparer
        ids: list[bytes] = []
        chunks: list[Chunk] = []
        starts: list[int] = []  # index of each entry's first record, per entry in ``names``
        names: list[str] = []
        records = 0
        malformed = 0
        last_new: str | None = None
        read_us = time.time_ns() // 1000
        open_ = self._open if self._open is not None else _OpenBatch()
        runs = dict(open_.runs)
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
        if malformed:
            self.stats.count_malformed(malformed)
        if last_new is None:  # nothing new: acknowledged with the open batch, or now
            if self._open is not None:
                self._open.ids.extend(ids)
            else:
                await self._ack(ids)
            return
        batch = await self._with_db_retry(
            lambda: preparer.prepare(chunks, entry_starts=starts, entry_ids=names), ends_episode=False
        )
        if self.record_lags:
            stamp_entry_times(batch, chunks, names, read_us)
        open_.batches.append(batch)
        open_.ids.extend(ids)
        open_.last_id = last_new
        open_.runs = runs
        open_.gaps.extend(gaps)
        open_.ticks += records
        open_.busy = open_.busy or (self._inflight is not None and not self._inflight.done())
        self._open = open_

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

    def _start_commit(self) -> None:
        """Commit the open batch in the background (nothing may be in flight)."""
        assert self._inflight is None
        open_, self._open = self._open, None
        if open_ is None:
            return
        self._commit_started = time.monotonic()
        started_us = time.time_ns() // 1000  # the same moment by the wall clock (the lags' stages)
        batch = merge_batches(open_.batches)
        offset = StreamOffset(self.stream, open_.last_id, tuple(open_.runs.values()), self._committed_id)
        self._inflight = asyncio.create_task(
            self._commit_and_ack(batch, offset, open_.ids, open_.gaps, started_us)
        )

    async def _finish_inflight(self) -> None:
        if self._inflight is not None:
            task, self._inflight = self._inflight, None
            await task

    async def _commit_all(self) -> None:
        """Everything read so far committed (and acknowledged)."""
        await self._finish_inflight()
        self._start_commit()
        await self._finish_inflight()

    async def _commit_and_ack(
        self,
        batch: TickBatch,
        offset: StreamOffset,
        ids: list[bytes],
        gaps: list[StreamGap],
        started_us: int,
    ) -> None:
        store = self._store
        assert store is not None
        # the same prepared batch until it commits: later batches build on its volume state
        done = await self._with_db_retry(lambda: store.commit(batch.write, offset))
        self._committed, self._committed_id = parse_id(offset.last_id), offset.last_id
        self.stats.record_commit(self.stream, offset.last_id, batch, done, gaps, commit_started_us=started_us)
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

    def status(self) -> dict[str, object]:
        return self.stats.status(self.durability)
