"""Bulk tick writes: validate, derive volume increments, COPY, and commit with the stream offset.

One :meth:`TickWriter.write` is one transaction: the trade rows (binary COPY into tick_data), the
updates that carry no new trade (into quote_updates), the per-instrument volume state and, when
given, the Redis stream position they came from. Either all of it is
committed or none, so a retry after any failure neither loses nor doubles a tick. A bad tick is
counted by reason and left out; it never aborts the batch it came in.

A row the database refuses (SQLSTATE class 22 or 23, e.g. a CHECK violation) does not abort its
batch either: the batch is written again, split in halves inside savepoints of the same
transaction until the refused rows are found; they go to ``tick_rejects`` with the reason, and
everything else commits (:func:`~trading_helper.storage.sqlstate.classify` decides what is a row
error, a resource error to retry later, or a lost connection).
"""

from __future__ import annotations

import json
import math
import time as _time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter

import asyncpg

from trading_helper import clock
from trading_helper.ingest.codec import Record, tick_record
from trading_helper.ingest.volume import NO_TRADE, StateRow, VolumeTracker, from_us, to_us
from trading_helper.models import MAX_CLOCK_SKEW, MAX_TICK_AGE, Tick
from trading_helper.storage import queries
from trading_helper.storage.migrate import Flavour, current_flavour
from trading_helper.storage.sqlstate import Failure, classify, retryable, sqlstate_of

#: tick_data: trades only; ``time`` is the trade's time (the candle time, unique per instrument)
TICK_COLUMNS = (
    "time", "instrument_id", "ltp", "last_qty", "volume", "volume_delta", "avg_price",
    "open_interest", "bid_price", "bid_qty", "ask_price", "ask_qty", "received_at", "exchange_time",
)
#: quote_updates: updates that carry no new trade; ``time`` is the exchange (feed) time
QUOTE_COLUMNS = (
    "time", "instrument_id", "ltp", "last_qty", "volume", "avg_price", "open_interest",
    "bid_price", "bid_qty", "ask_price", "ask_qty", "received_at", "trade_time",
)
#: an id looked up and not found is not asked about again for this long (a flood of unknown ids
#: costs one query per second)
UNKNOWN_ID_TTL_S = 1.0
_SKEW_US = int(MAX_CLOCK_SKEW.total_seconds()) * 1_000_000
_AGE_US = int(MAX_TICK_AGE.total_seconds()) * 1_000_000
_INF = float("inf")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT4 = 2**31 - 1

TickRow = tuple[object, ...]


@dataclass(slots=True, frozen=True)
class VolumeReset:
    """Marker in the tick flow: the feed (re)connected or subscribed these instruments at
    ``at_us`` (epoch µs; None in entries from before schema version 6), so their capture started
    again. The volume baseline is kept (see :mod:`trading_helper.ingest.volume`); the time tells
    a snapshot of an older trade from a new one."""

    instrument_ids: frozenset[int]
    at_us: int | None = None


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """A row the database refused, stored in ``tick_rejects``."""

    relation: str
    row: TickRow
    entry_id: str | None
    sqlstate: str
    reason: str


@dataclass(slots=True)
class WriteResult:
    written: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: an earlier try of this batch had committed (its reply was lost): nothing was written again
    already_committed: bool = False


class _AlreadyCommitted(Exception):
    """Rolls back a retried batch whose earlier try is found committed."""


def _position(entry_id: str) -> tuple[int, int]:
    """A Redis stream id ``ms-seq`` as a comparable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(slots=True)
class PreparedBatch:
    rows: list[TickRow]
    volume_rows: list[StateRow]
    result: WriteResult
    quote_rows: list[TickRow] = field(default_factory=list)
    #: the records the rows came from, and (index of the first record, stream entry id) per entry
    items: Sequence[Record | VolumeReset] = ()
    sources: list[tuple[int, str]] = field(default_factory=list)
    #: set once a row was refused: later tries of this batch isolate rows from the start
    isolate: bool = False
    #: set once a try failed: the connection may have died after the server committed it
    retried: bool = False


@dataclass(slots=True, frozen=True)
class RunPosition:
    """The last entry of a receiver run in a batch, and the ticks found lost before it."""

    run: str
    entry_no: int
    ticks: int
    lost: int = 0


@dataclass(slots=True, frozen=True)
class StreamOffset:
    stream: str
    last_id: str
    #: receiver runs' positions committed with the offset (gap detection)
    runs: tuple[RunPosition, ...] = ()


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def row_json(columns: Sequence[str], row: TickRow) -> str:
    return json.dumps({c: _json_value(v) for c, v in zip(columns, row, strict=True)})


class TickWriter:
    """Writes ticks for one ingest process. Not for concurrent use: one writer per stream."""

    def __init__(self, pool: asyncpg.Pool, flavour: Flavour, *,
                 monotonic: Callable[[], float] = _time.monotonic) -> None:
        self.pool = pool
        self.flavour = flavour
        self.tracker = VolumeTracker()
        self.known_ids: set[int] = set()
        #: id -> clock time until which it counts as unknown without asking again
        self._unknown_until: dict[int, float] = {}
        self._clock = monotonic
        #: queries for ids missing from ``known_ids``
        self.id_lookups = 0
        self._partition_days: set[date] = set()
        self._needs_reload = False

    @classmethod
    async def open(cls, pool: asyncpg.Pool) -> TickWriter:
        async with pool.acquire() as conn:
            writer = cls(pool, await current_flavour(conn))
            await writer._reload(conn)
        return writer

    async def _reload(self, conn: asyncpg.Connection) -> None:
        self.tracker = VolumeTracker()
        self.tracker.load([tuple(r) for r in await conn.fetch(queries.LOAD_VOLUME_STATE)])
        self.known_ids = {r[0] for r in await conn.fetch(queries.INSTRUMENT_IDS)}

    def prepare(
        self, entries: Iterable[Record | VolumeReset], now: datetime, result: WriteResult,
        quote_rows: list[TickRow] | None = None,
    ) -> tuple[list[TickRow], set[int]]:
        """Rows for COPY into tick_data in arrival order (trades); updates that carry no new trade
        go to ``quote_rows`` (for quote_updates; dropped when None). Also the ids of unknown
        instruments seen."""
        rows: list[TickRow] = []
        quotes: list[TickRow] = [] if quote_rows is None else quote_rows
        unknown: set[int] = set()
        now_us = to_us(now)
        newest, oldest = now_us + _SKEW_US, now_us - _AGE_US
        known, apply, rejected = self.known_ids, self.tracker.apply, result.rejected
        append, append_quote = rows.append, quotes.append
        # ticks of a frame share their receive time and mostly their exchange second: build each
        # datetime once and reuse it (datetime construction is the costliest step per tick)
        rx_us, rx_dt = -1, _EPOCH
        sec, sec_dt = -1, _EPOCH
        ex_us, ex_dt = -1, _EPOCH
        for rec in entries:
            if rec.__class__ is VolumeReset:
                self.tracker.reset(rec.instrument_ids, rec.at_us)
                continue
            ex, rx, iid, ltp, qty, vol, avg, oi, bp, bq, ap, aq, tr = rec  # type: ignore[misc]
            if not 0.0 < ltp < _INF:  # NaN fails too
                rejected["bad_price"] += 1
            elif not oldest <= ex <= newest:
                rejected["timestamp_out_of_range"] += 1
            elif iid not in known:
                unknown.add(iid)
                rejected["unknown_instrument"] += 1
            elif qty > _INT4 or bq > _INT4 or aq > _INT4:
                rejected["bad_quantity"] += 1
            else:
                ts, delta = apply(iid, ex, tr, None if vol < 0 else vol, None if qty < 0 else qty)
                if rx != rx_us:
                    rx_us, rx_dt = rx, from_us(rx)
                if ex != ex_us:
                    ex_us, ex_dt = ex, from_us(ex)
                if ts == NO_TRADE or not oldest <= ts <= newest:
                    # no new trade (or a trade time no candle may take): quotes and OI only
                    append_quote((ex_dt, iid, ltp, None if qty < 0 else qty, None if vol < 0 else vol,
                                  None if avg != avg else avg, None if oi < 0 else oi, None if bp != bp else bp,
                                  None if bq < 0 else bq, None if ap != ap else ap, None if aq < 0 else aq,
                                  rx_dt, None if tr < 0 else from_us(tr)))
                    continue
                if ts // 1_000_000 != sec:
                    sec = ts // 1_000_000
                    sec_dt = from_us(sec * 1_000_000)
                us = ts % 1_000_000
                append((sec_dt.replace(microsecond=us) if us else sec_dt, iid, ltp, None if qty < 0 else qty,
                        None if vol < 0 else vol, delta, None if avg != avg else avg, None if oi < 0 else oi,
                        None if bp != bp else bp, None if bq < 0 else bq, None if ap != ap else ap,
                        None if aq < 0 else aq, rx_dt, ex_dt))
        return rows, unknown

    async def write(
        self, entries: Sequence[Tick | VolumeReset], *, offset: StreamOffset | None = None
    ) -> WriteResult:
        """Validate and store ticks (and ``offset``) in one transaction."""
        naive = 0
        records: list[Record | VolumeReset] = []
        for t in entries:
            if isinstance(t, VolumeReset):
                records.append(t)
            elif (t.exchange_ts.tzinfo is None or t.received_ts.tzinfo is None
                  or (t.trade_ts is not None and t.trade_ts.tzinfo is None)):
                naive += 1
            else:
                records.append(tick_record(t))
        result = await self.write_records(records, offset=offset)
        if naive:
            result.rejected["naive_timestamp"] += naive
        return result

    async def write_records(
        self, entries: Sequence[Record | VolumeReset], *, offset: StreamOffset | None = None
    ) -> WriteResult:
        """Validate and store tick records (and ``offset``) in one transaction."""
        batch = await self.prepare_batch(entries)
        try:
            return await self.commit(batch, offset)
        except BaseException:
            # the in-memory volume state now includes a batch that is not in the database
            self._needs_reload = True
            raise

    async def prepare_batch(self, entries: Sequence[Record | VolumeReset], *,
                            sources: Sequence[tuple[int, str]] = ()) -> PreparedBatch:
        """Everything of a write but the database round trips (CPU only, unless state must load
        or ids are missing from the cache).

        ``sources``: (index of the entry's first record, stream entry id) per stream entry, so a
        refused row can name its entry. Raises DatabaseUnavailable / DatabaseBusy (nothing
        changed: call again) when the database cannot answer.

        Batches must be committed in the order they were prepared, each eventually: the volume
        state of batch k+1 builds on batch k. Retrying :meth:`commit` with the same batch keeps
        that true; otherwise use :meth:`write_records`, which reloads the state after a failure.
        """
        try:
            if self._needs_reload:
                async with self.pool.acquire() as conn:
                    await self._reload(conn)
                self._needs_reload = False
            ids = {rec[2] for rec in entries if rec.__class__ is not VolumeReset}  # type: ignore[index]
            if not ids <= self.known_ids:
                await self._look_up(ids - self.known_ids)
        except Exception as exc:
            wrapped = retryable(exc, "loading the writer's state failed")
            if wrapped is None or wrapped is exc:
                raise
            raise wrapped from exc
        result = WriteResult()
        quote_rows: list[TickRow] = []
        rows, _ = self.prepare(entries, clock.now(), result, quote_rows)
        return PreparedBatch(rows, self.tracker.take_changes(), result, quote_rows, entries, list(sources))

    async def _look_up(self, missing: set[int]) -> None:
        """Instruments added after the cache was loaded are known at once; an id that is not an
        instrument is asked about again only after UNKNOWN_ID_TTL_S."""
        now = self._clock()
        ask = [i for i in missing if self._unknown_until.get(i, 0.0) <= now]
        if not ask:
            return
        async with self.pool.acquire() as conn:
            found = {r[0] for r in await conn.fetch(queries.KNOWN_INSTRUMENT_IDS, ask)}
        self.id_lookups += 1
        self.known_ids |= found
        if len(self._unknown_until) > 10_000:
            self._unknown_until = {i: t for i, t in self._unknown_until.items() if t > now}
        for i in ask:
            if i in found:
                self._unknown_until.pop(i, None)
            else:
                self._unknown_until[i] = now + UNKNOWN_ID_TTL_S

    async def commit(self, batch: PreparedBatch, offset: StreamOffset | None = None) -> WriteResult:
        """One transaction: the rows, the volume state and the stream offset. Safe to retry.

        Rows the database refuses go to ``tick_rejects`` in the same transaction (the result's
        ``dead_letters``). Raises DatabaseUnavailable (connection) or DatabaseBusy (resources, a
        cancel, a lock) to be retried with the same batch; any other error as it is.

        A try can fail after the server committed it (the connection died before the reply came):
        a later try of the same batch first takes the stream's offset row, waiting for any
        transaction of an earlier try still finishing on the server, and when the committed
        offset already covers this batch, writes nothing again (``already_committed``)."""
        try:
            async with self.pool.acquire() as conn:
                rows, quote_rows = batch.rows, batch.quote_rows
                if (rows or quote_rows) and self.flavour == "postgres":
                    await self._ensure_partitions(conn, rows, quote_rows)
                try:
                    dead = await self._commit_once(conn, batch, offset)
                except Exception as exc:
                    if batch.isolate or classify(exc) is not Failure.ROW:
                        raise
                    batch.isolate = True  # the whole batch was rolled back: again, row by row where needed
                    dead = await self._commit_once(conn, batch, offset)
        except _AlreadyCommitted:
            return WriteResult(written=len(batch.rows) + len(batch.quote_rows),
                               rejected=Counter(batch.result.rejected), already_committed=True)
        except Exception as exc:
            batch.retried = True
            wrapped = retryable(exc, "tick write failed")
            if wrapped is None or wrapped is exc:
                raise
            raise wrapped from exc
        return WriteResult(written=len(batch.rows) + len(batch.quote_rows) - len(dead),
                           rejected=Counter(batch.result.rejected), dead_letters=dead)

    async def _commit_once(self, conn: asyncpg.Connection, batch: PreparedBatch,
                           offset: StreamOffset | None) -> list[DeadLetter]:
        dead: list[DeadLetter] = []
        taken: set[int] = set()  # records already named as a refused row's source
        async with conn.transaction():
            if batch.retried and offset is not None:
                committed = await conn.fetchval(queries.LOCK_OFFSET, offset.stream)
                if _position(committed) >= _position(offset.last_id):
                    raise _AlreadyCommitted
            for relation, columns, rows in (("tick_data", TICK_COLUMNS, batch.rows),
                                            ("quote_updates", QUOTE_COLUMNS, batch.quote_rows)):
                if rows and not batch.isolate:
                    await conn.copy_records_to_table(relation, records=rows, columns=columns)
                elif rows:
                    bad: list[tuple[int, BaseException]] = []
                    await _copy_isolating(conn, relation, columns, rows, 0, len(rows), bad)
                    dead.extend(_dead_letter(batch, relation, columns, rows[i], exc, taken) for i, exc in bad)
            if dead:
                await conn.execute(queries.INSERT_TICK_REJECTS, offset.stream if offset else None,
                                   [d.relation for d in dead], [d.entry_id for d in dead],
                                   [row_json(TICK_COLUMNS if d.relation == "tick_data" else QUOTE_COLUMNS, d.row)
                                    for d in dead],
                                   [d.sqlstate for d in dead], [d.reason for d in dead])
            if batch.volume_rows:
                await conn.execute(queries.UPSERT_VOLUME_STATE, *map(list, zip(*batch.volume_rows, strict=True)))
            if offset is not None:
                await conn.execute(queries.UPSERT_OFFSET, offset.stream, offset.last_id)
                if offset.runs:
                    runs = offset.runs
                    await conn.execute(queries.UPSERT_SEQUENCES, offset.stream, [r.run for r in runs],
                                       [r.entry_no for r in runs], [r.ticks for r in runs],
                                       [r.lost for r in runs])
        return dead

    async def _ensure_partitions(self, conn: asyncpg.Connection, *row_lists: list[TickRow]) -> None:
        """Daily partitions (of tick_data and quote_updates) for every UTC day from the batch's
        oldest to its newest row."""
        times: list[datetime] = [f(rows, key=itemgetter(0))[0]  # type: ignore[misc]
                                 for rows in row_lists if rows for f in (min, max)]
        first, last = min(times).astimezone(UTC).date(), max(times).astimezone(UTC).date()
        if first in self._partition_days and last in self._partition_days:
            return
        start = datetime(first.year, first.month, first.day, tzinfo=UTC)
        end = datetime(last.year, last.month, last.day, tzinfo=UTC)
        await conn.execute(queries.ENSURE_PARTITIONS, start, end)
        day = first
        while day <= last:
            self._partition_days.add(day)
            day += timedelta(days=1)


async def _copy_isolating(conn: asyncpg.Connection, relation: str, columns: Sequence[str], rows: list[TickRow],
                          start: int, end: int, bad: list[tuple[int, BaseException]]) -> None:
    """COPY rows[start:end] in halves, each in a savepoint; a half that is refused for its data is
    split again, down to single rows, which are recorded in ``bad``. Rows already written stay
    written, so rows refused only together (a unique key) are found too."""
    mid = (start + end) // 2
    for lo, hi in ((start, mid), (mid, end)) if end - start > 1 else ((start, end),):
        if lo == hi:
            continue
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(relation, records=rows[lo:hi], columns=columns)
        except Exception as exc:
            if classify(exc) is not Failure.ROW:
                raise
            if hi - lo == 1:
                bad.append((lo, exc))
            else:
                await _copy_isolating(conn, relation, columns, rows, lo, hi, bad)


def _dead_letter(batch: PreparedBatch, relation: str, columns: Sequence[str], row: TickRow,
                 exc: BaseException, taken: set[int]) -> DeadLetter:
    state = sqlstate_of(exc) or "22000"  # asyncpg's client-side encoding error has no SQLSTATE
    return DeadLetter(relation, row, _entry_of(batch, columns, row, taken), state, f"{state}: {exc}")


def _entry_of(batch: PreparedBatch, columns: Sequence[str], row: TickRow, taken: set[int]) -> str | None:
    """The stream entry a refused row came from, found by its record (receive time, instrument,
    price: fields :meth:`TickWriter.prepare` copies unchanged). Only refused rows are looked up,
    so the hot path keeps one ``prepare`` call per batch; None when not found."""
    if not batch.sources:
        return None
    rx = to_us(row[columns.index("received_at")])  # type: ignore[arg-type]
    iid, ltp = row[columns.index("instrument_id")], row[columns.index("ltp")]
    for i, rec in enumerate(batch.items):
        if (i not in taken and rec.__class__ is not VolumeReset
                and rec[1] == rx and rec[2] == iid and rec[3] == ltp):  # type: ignore[index]
            taken.add(i)
            at = bisect_right([start for start, _ in batch.sources], i) - 1
            return batch.sources[at][1] if at >= 0 else None
    return None
