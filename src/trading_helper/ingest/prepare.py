"""The writer's in-memory state around the pure batch step: the volume baseline per instrument
and the instruments known to exist, loaded from the database and kept in step with it.

An instrument's committed volume state is loaded when a batch first names it, not all at the
start: a writer taking over a stream of 2,000 instruments reads their state, not the whole table
and log (12,000 instruments in three such loads at once made the takeover's backlog wait). Loaded
later, the state is never older than at the start (an instrument not yet in a batch of this
stream has no commit of ours pending), and merging keeps the later baseline either way.

:meth:`BatchPreparer.prepare` is everything of a write but the commit: it looks up instrument ids
missing from its cache (an id that is no instrument is asked about again only after
:data:`UNKNOWN_ID_TTL_S`), then runs :func:`~.batch.build_batch` (CPU only).
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Sequence

import asyncpg

from trading_helper import clock
from trading_helper.ingest.batch import Chunk, TickBatch, VolumeReset, build_batch, instrument_ids
from trading_helper.ingest.volume import to_us
from trading_helper.ingest.volume_book import VolumeBook
from trading_helper.storage import ticks
from trading_helper.storage.sqlstate import retryable

#: an id looked up and not found is not asked about again for this long (a flood of unknown ids
#: costs one query per second)
UNKNOWN_ID_TTL_S = 1.0


class BatchPreparer:
    """Prepares tick batches for one writer. Not for concurrent use."""

    def __init__(
        self, pool: asyncpg.Pool | None, *, monotonic: Callable[[], float] = _time.monotonic
    ) -> None:
        self.pool = pool
        self.tracker = VolumeBook()
        self.known_ids: set[int] = set()
        #: id -> clock time until which it counts as unknown without asking again
        self._unknown_until: dict[int, float] = {}
        self._clock = monotonic
        #: queries for ids missing from ``known_ids``
        self.id_lookups = 0
        #: capture starts whose instruments' committed state was merged in (:meth:`_merge_committed`)
        self.catch_ups = 0
        #: loads of the committed volume state of instruments a batch names for the first time
        self.state_loads = 0
        #: instruments whose committed state is merged into ``tracker`` (since the last reload)
        self._loaded: set[int] = set()
        self._needs_reload = False

    @classmethod
    async def open(cls, pool: asyncpg.Pool) -> BatchPreparer:
        preparer = cls(pool)
        await preparer.reload()
        return preparer

    async def reload(self) -> None:
        """Forget the volume state (each instrument's is loaded again when next named) and read
        which instruments exist."""
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            self.known_ids = await ticks.instrument_ids(conn)
        self.tracker = VolumeBook()
        self._loaded = set()
        self._needs_reload = False

    def invalidate(self) -> None:
        """A prepared batch will not be committed: its volume state must come from the database."""
        self._needs_reload = True

    async def prepare(
        self, chunks: Sequence[Chunk], *, entry_starts: Sequence[int] = (), entry_ids: Sequence[str] = ()
    ) -> TickBatch:
        """The batch's rows (CPU only, unless state must load or ids are missing from the cache).

        Raises DatabaseUnavailable / DatabaseBusy (nothing changed: call again) when the database
        cannot answer. Batches must be committed in the order they were prepared, each
        eventually: the volume state of batch k+1 builds on batch k; if one is given up, call
        :meth:`invalidate`."""
        try:
            if self._needs_reload:
                await self.reload()
            started = frozenset[int]().union(
                *(c.instrument_ids for c in chunks if isinstance(c, VolumeReset))
            )
            ids = instrument_ids(chunks)
            if not ids <= self.known_ids:
                await self._look_up(ids - self.known_ids)
            unloaded = (ids & self.known_ids) - self._loaded
            if started or unloaded:
                await self._merge_committed(started, unloaded)
        except Exception as exc:
            wrapped = retryable(exc, "loading the writer's state failed")
            if wrapped is None or wrapped is exc:
                raise
            raise wrapped from exc
        return build_batch(
            chunks,
            self.tracker,
            self.known_ids,
            to_us(clock.now()),
            entry_starts=entry_starts,
            entry_ids=entry_ids,
        )

    async def _merge_committed(self, started: frozenset[int], unloaded: set[int]) -> None:
        """Merge in the committed volume state of ``unloaded`` (instruments no batch named before;
        none: a new one) and of ``started``, in one query.

        Capture of ``started`` (re)starts in this stream: an instrument may come from another
        shard (its account was lost and the plan placed it anew), whose writer counted its volume
        since this writer loaded its state; its committed state is merged in, so that volume is
        not counted again. What the other stream had not committed yet when this runs can still be
        counted by both: the old shard's collector stopped before the new one subscribed, so that
        is its last fraction of a second of backlog at most."""
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            self.tracker.merge(await ticks.load_volume_state(conn, started | unloaded))
        self._loaded |= started | unloaded
        self.catch_ups += bool(started)
        self.state_loads += bool(unloaded)

    async def _look_up(self, missing: set[int]) -> None:
        """Instruments added after the cache was loaded are known at once; an id that is not an
        instrument is asked about again only after UNKNOWN_ID_TTL_S."""
        now = self._clock()
        ask = [i for i in missing if self._unknown_until.get(i, 0.0) <= now]
        if not ask:
            return
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            found = await ticks.known_instrument_ids(conn, ask)
        self.id_lookups += 1
        self.known_ids |= found
        if len(self._unknown_until) > 10_000:
            self._unknown_until = {i: t for i, t in self._unknown_until.items() if t > now}
        for i in ask:
            if i in found:
                self._unknown_until.pop(i, None)
            else:
                self._unknown_until[i] = now + UNKNOWN_ID_TTL_S
