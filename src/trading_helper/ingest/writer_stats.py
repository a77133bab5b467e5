"""What the database writer counts, logs and reports: the outcome of each commit, database
failure episodes (logged once each), and the writer's status. The writer's control flow (reads,
batches, retries, acknowledgements) is in :mod:`.writer`; this is its bookkeeping."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from trading_helper.errors import DatabaseBusy, DatabaseUnavailable
from trading_helper.ingest import metrics
from trading_helper.ingest.batch import TickBatch
from trading_helper.ingest.lags import LagHistograms
from trading_helper.ingest.redisconn import RedisDurability
from trading_helper.ingest.volume import to_us
from trading_helper.storage.ticks import Committed

log = logging.getLogger("trading_helper.ingest.writer")


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
    #: commits refused because another commit of the stream finished meanwhile (errors.OffsetMoved)
    offsets_moved: int = 0
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
    #: receive -> commit lag of every tick written, by stage; only with ``record_lags``
    lags: LagHistograms | None = None

    def count_malformed(self, entries: int) -> None:
        self.rejected["malformed_entry"] += entries
        metrics.TICKS_REJECTED.labels("malformed_entry").inc(entries)

    def record_commit(
        self,
        stream: str,
        last_id: str,
        batch: TickBatch,
        done: Committed,
        gaps: list[StreamGap],
        *,
        commit_started_us: int,
    ) -> None:
        """Count, measure and log what one committed batch (entries up to ``last_id``) did."""
        if done.already_committed:
            log.warning(
                "entries up to %s were already committed by an earlier try whose reply was lost; "
                "not written again",
                last_id,
            )
        dead = done.dead_letters
        written = batch.rows - len(dead)
        now = datetime.now(UTC)
        self.written += written
        self.batches += 1
        self.last_commit_at = now
        for reason, n in batch.rejected.items():
            self.rejected[reason] += n
            metrics.TICKS_REJECTED.labels(reason).inc(n)
        if dead:
            self.dead_lettered += len(dead)
            metrics.TICKS_DEAD_LETTERED.inc(len(dead))
            log.error(
                "%d tick rows refused by the database went to tick_rejects (first: entry %s, %r); "
                "the rest of the batch was written",
                len(dead),
                dead[0].entry_id,
                dead[0].reason,
            )
        for gap in gaps:
            self.lost += gap.ticks
            metrics.TICKS_LOST.inc(gap.ticks)
            log.error(
                "tick stream %s lost entries %d..%d of receiver run %s (%d ticks) before they were "
                "written (Redis restarted without persistence?)",
                stream,
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
            if self.lags is not None:
                self.lags.add(received, batch.accepted_us, batch.read_us, commit_started_us, now_us)

    def db_failed(self, exc: DatabaseUnavailable | DatabaseBusy) -> None:
        """Count a failed database call; log only the first of an episode."""
        self.last_db_error = str(exc)[:500]
        if isinstance(exc, DatabaseBusy):
            self.db_busy_errors += 1
            metrics.DB_RESOURCE_ERRORS.labels(exc.sqlstate or "unknown").inc()
            if self.db_busy_since is None:
                self.db_busy_since = time.monotonic()
                metrics.WRITER_DB_BUSY.set(1)
                log.error(
                    "database refuses tick writes (%s): retrying with backoff; ticks wait in the Redis "
                    "stream",
                    exc,
                )
            return
        metrics.WRITE_FAILURES.labels(type(exc.__cause__ or exc).__name__).inc()
        if self.db_down_since is None:
            self.db_down_since = time.monotonic()
            log.error("database unavailable (%s): ticks wait in the Redis stream", exc)

    def db_back(self) -> None:
        if self.db_down_since is not None:
            log.warning(
                "database reachable again after %.1f s; draining the stream",
                time.monotonic() - self.db_down_since,
            )
            self.db_down_since = None
        if self.db_busy_since is not None:
            log.warning(
                "database accepts tick writes again after %.1f s; draining the stream",
                time.monotonic() - self.db_busy_since,
            )
            self.db_busy_since = None
            metrics.WRITER_DB_BUSY.set(0)

    def status(self, durability: RedisDurability | None) -> dict[str, object]:
        return {
            "written": self.written,
            "batches": self.batches,
            "rejected": dict(self.rejected),
            "dead_lettered": self.dead_lettered,
            "lost": self.lost,
            "db_down": self.db_down_since is not None,
            "db_busy": self.db_busy_since is not None,
            "db_busy_errors": self.db_busy_errors,
            "last_db_error": self.last_db_error,
            "error": self.error,
            "redis_persistence": durability.persistence if durability else None,
            "redis_persistence_detail": durability.detail if durability else None,
            "last_commit_at": self.last_commit_at.isoformat() if self.last_commit_at else None,
        }
