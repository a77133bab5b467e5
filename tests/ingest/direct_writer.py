"""Ticks written straight to the database, without the Redis stream: the writer's own steps
(:class:`~trading_helper.ingest.prepare.BatchPreparer`, :func:`~trading_helper.ingest.batch.build_batch`,
:class:`~trading_helper.storage.ticks.TickStore`) driven by a test."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from trading_helper.ingest.batch import Chunk, TickBatch, VolumeReset
from trading_helper.ingest.codec import RECORD, Record, encode_ticks
from trading_helper.ingest.prepare import BatchPreparer
from trading_helper.models import Tick
from trading_helper.storage.ticks import DeadLetter, StreamOffset, TickStore


@dataclass(slots=True)
class WriteResult:
    written: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    already_committed: bool = False


@dataclass(slots=True)
class PreparedBatch:
    """A prepared batch, its trade rows readable as tuples."""

    batch: TickBatch

    @property
    def rows(self) -> list[tuple[object, ...]]:
        return self.batch.write.trades.rows.rows()

    @property
    def retried(self) -> bool:
        return self.batch.write.retried

    @retried.setter
    def retried(self, value: bool) -> None:
        self.batch.write.retried = value


def _naive(t: Tick) -> bool:
    return (
        t.exchange_ts.tzinfo is None
        or t.received_ts.tzinfo is None
        or (t.trade_ts is not None and t.trade_ts.tzinfo is None)
    )


def chunks_of(entries: Sequence[Tick | Record | VolumeReset]) -> list[Chunk]:
    """The batch chunks of ticks (or records) and resets, in order: one payload per run of ticks."""
    chunks: list[Chunk] = []
    run: list[bytes] = []
    for e in entries:
        if isinstance(e, VolumeReset):
            if run:
                chunks.append(b"".join(run))
                run = []
            chunks.append(e)
        else:
            run.append(encode_ticks([e]) if isinstance(e, Tick) else RECORD.pack(*e))
    if run:
        chunks.append(b"".join(run))
    return chunks


class DirectWriter:
    """One batch per call, each in one transaction. Not for concurrent use."""

    def __init__(self, preparer: BatchPreparer, store: TickStore) -> None:
        self.preparer = preparer
        self.store = store

    @classmethod
    async def open(cls, pool: asyncpg.Pool) -> DirectWriter:
        return cls(await BatchPreparer.open(pool), await TickStore.open(pool))

    @property
    def id_lookups(self) -> int:
        return self.preparer.id_lookups

    def set_clock(self, monotonic: object) -> None:
        self.preparer._clock = monotonic  # type: ignore[assignment]

    async def write(
        self, entries: Sequence[Tick | VolumeReset], *, offset: StreamOffset | None = None
    ) -> WriteResult:
        """Validate and store ticks (and ``offset``) in one transaction (naive timestamps are
        refused here, as the receiver refuses them)."""
        good = [e for e in entries if isinstance(e, VolumeReset) or not _naive(e)]
        result = await self.write_records(good, offset=offset)
        if len(good) < len(entries):
            result.rejected["naive_timestamp"] += len(entries) - len(good)
        return result

    async def write_records(
        self, entries: Sequence[Tick | Record | VolumeReset], *, offset: StreamOffset | None = None
    ) -> WriteResult:
        batch = await self.prepare_batch(entries)
        try:
            return await self.commit(batch, offset)
        except BaseException:
            # the in-memory volume state now includes a batch that is not in the database
            self.preparer.invalidate()
            raise

    async def prepare_batch(self, entries: Sequence[Tick | Record | VolumeReset]) -> PreparedBatch:
        return PreparedBatch(await self.preparer.prepare(chunks_of(entries)))

    async def commit(self, prepared: PreparedBatch, offset: StreamOffset | None = None) -> WriteResult:
        batch = prepared.batch
        done = await self.store.commit(batch.write, offset)
        return WriteResult(
            batch.rows - len(done.dead_letters),
            Counter(batch.rejected),
            done.dead_letters,
            done.already_committed,
        )
