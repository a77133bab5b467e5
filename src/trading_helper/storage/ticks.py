"""Bulk tick writes: validate, derive volume increments, COPY, and commit with the stream offset.

One :meth:`TickWriter.write` is one transaction: the trade rows (binary COPY into tick_data), the
updates that carry no new trade (into quote_updates), the per-instrument volume state and, when
given, the Redis stream position they came from. Either all of it is
committed or none, so a retry after any failure neither loses nor doubles a tick. A bad tick is
counted by reason and left out; it never aborts the batch it came in.
"""

from __future__ import annotations

import time as _time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter

import asyncpg

from trading_helper import clock
from trading_helper.errors import DatabaseUnavailable
from trading_helper.ingest.codec import Record, tick_record
from trading_helper.ingest.volume import NO_TRADE, StateRow, VolumeTracker, from_us, to_us
from trading_helper.models import MAX_CLOCK_SKEW, MAX_TICK_AGE, Tick
from trading_helper.storage import queries
from trading_helper.storage.migrate import Flavour, current_flavour

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
_KNOWN_IDS_REFRESH_S = 5.0
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


@dataclass(slots=True)
class WriteResult:
    written: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class PreparedBatch:
    rows: list[TickRow]
    volume_rows: list[StateRow]
    result: WriteResult
    quote_rows: list[TickRow] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class StreamOffset:
    stream: str
    last_id: str


class TickWriter:
    """Writes ticks for one ingest process. Not for concurrent use: one writer per stream."""

    def __init__(self, pool: asyncpg.Pool, flavour: Flavour) -> None:
        self.pool = pool
        self.flavour = flavour
        self.tracker = VolumeTracker()
        self.known_ids: set[int] = set()
        self._known_loaded_at = 0.0
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
        self._known_loaded_at = _time.monotonic()

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

    async def prepare_batch(self, entries: Sequence[Record | VolumeReset]) -> PreparedBatch:
        """Everything of a write but the database round trips (CPU only, unless state must load).

        Batches must be committed in the order they were prepared, each eventually: the volume
        state of batch k+1 builds on batch k. Retrying :meth:`commit` with the same batch keeps
        that true; otherwise use :meth:`write_records`, which reloads the state after a failure.
        """
        if self._needs_reload:
            async with self.pool.acquire() as conn:
                await self._reload(conn)
            self._needs_reload = False
        ids = {rec[2] for rec in entries if rec.__class__ is not VolumeReset}  # type: ignore[index]
        if not ids <= self.known_ids and _time.monotonic() - self._known_loaded_at >= _KNOWN_IDS_REFRESH_S:
            # instruments may have been added since the ids were loaded: look once more
            async with self.pool.acquire() as conn:
                self.known_ids = {r[0] for r in await conn.fetch(queries.INSTRUMENT_IDS)}
            self._known_loaded_at = _time.monotonic()
        result = WriteResult()
        quote_rows: list[TickRow] = []
        rows, _ = self.prepare(entries, clock.now(), result, quote_rows)
        return PreparedBatch(rows, self.tracker.take_changes(), result, quote_rows)

    async def commit(self, batch: PreparedBatch, offset: StreamOffset | None = None) -> WriteResult:
        """One transaction: the rows, the volume state and the stream offset. Safe to retry."""
        try:
            async with self.pool.acquire() as conn:
                rows, quote_rows = batch.rows, batch.quote_rows
                if (rows or quote_rows) and self.flavour == "postgres":
                    await self._ensure_partitions(conn, rows, quote_rows)
                async with conn.transaction():
                    if rows:
                        await conn.copy_records_to_table("tick_data", records=rows, columns=TICK_COLUMNS)
                    if quote_rows:
                        await conn.copy_records_to_table("quote_updates", records=quote_rows,
                                                         columns=QUOTE_COLUMNS)
                    if batch.volume_rows:
                        await conn.execute(queries.UPSERT_VOLUME_STATE, *map(list, zip(*batch.volume_rows,
                                                                                       strict=True)))
                    if offset is not None:
                        await conn.execute(queries.UPSERT_OFFSET, offset.stream, offset.last_id)
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.AdminShutdownError) as exc:
            raise DatabaseUnavailable(f"tick write failed, will retry: {exc}") from exc
        result = WriteResult(written=len(batch.rows) + len(batch.quote_rows), rejected=Counter(batch.result.rejected))
        return result

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
