"""Bulk tick writes: the rows it is given, COPYed and committed with the stream offset.

One :meth:`TickStore.commit` is one transaction: the trade rows (binary COPY into tick_data), the
updates that carry no new trade (into quote_updates), the per-instrument volume state and, when
given, the Redis stream position they came from. Either all of it is committed or none, so a
retry after any failure neither loses nor doubles a tick. What the rows are (validation, volume
increments, trade or quote) is decided before, by :mod:`trading_helper.ingest.batch`; this module
only writes.

A row the database refuses (SQLSTATE class 22 or 23, e.g. a CHECK violation) does not abort its
batch: the batch is written again, split in halves inside savepoints of the same transaction
until the refused rows are found; they go to ``tick_rejects`` with the reason, and everything
else commits (:func:`~trading_helper.storage.sqlstate.classify` decides what is a row error, a
resource error to retry later, or a lost connection).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np
import numpy.typing as npt

from trading_helper.errors import OffsetMoved
from trading_helper.storage import queries
from trading_helper.storage.db import Connection
from trading_helper.storage.migrate import Flavour, current_flavour
from trading_helper.storage.pgcopy import BinaryRows, Kind, array_value, empty, one_row
from trading_helper.storage.sqlstate import Failure, classify, retryable, sqlstate_of

_T, _I4, _I8, _F8 = Kind.TIMESTAMPTZ, Kind.INT4, Kind.INT8, Kind.FLOAT8
#: tick_data: trades only; ``time`` is the trade's time (the candle time, unique per instrument)
TICK_COLUMNS = (
    "time",
    "instrument_id",
    "ltp",
    "last_qty",
    "volume",
    "volume_delta",
    "avg_price",
    "open_interest",
    "bid_price",
    "bid_qty",
    "ask_price",
    "ask_qty",
    "received_at",
    "exchange_time",
)
TICK_KINDS = (_T, _I4, _F8, _I4, _I8, _I8, _F8, _I8, _F8, _I4, _F8, _I4, _T, _T)
#: quote_updates: updates that carry no new trade; ``time`` is the exchange (feed) time
QUOTE_COLUMNS = (
    "time",
    "instrument_id",
    "ltp",
    "last_qty",
    "volume",
    "avg_price",
    "open_interest",
    "bid_price",
    "bid_qty",
    "ask_price",
    "ask_qty",
    "received_at",
    "trade_time",
)
QUOTE_KINDS = (_T, _I4, _F8, _I4, _I8, _F8, _I8, _F8, _I4, _F8, _I4, _T, _T)
_DAY_US = 86_400 * 1_000_000
#: a ``tick_volume_state`` row as the writer reads and writes it: instrument id, IST day (days since
#: 1970-01-01), baseline volume, latest stored trade time, trade time of the baseline, start of the
#: current capture (epoch microseconds); -1 where unknown. The SQL converts (storage/queries.py):
#: a datetime per value cost the writer a tenth of its time, building them and encoding them again
VolumeStateRow = tuple[int, int, int, int, int, int]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class TickRows:
    """The rows of one relation, in binary COPY format, with the times they span and the stream
    entry each came from (an index into :attr:`TickWrite.entry_ids`; None: not known)."""

    rows: BinaryRows
    first_us: int = 0
    last_us: int = 0
    entry_of: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self.rows)


def no_rows(kinds: Sequence[Kind]) -> TickRows:
    return TickRows(empty(kinds))


@dataclass(slots=True)
class TickWrite:
    """Everything one transaction writes but the offset."""

    trades: TickRows
    quotes: TickRows
    volume_rows: list[VolumeStateRow] = field(default_factory=list)
    entry_ids: Sequence[str] = ()
    #: set once a row was refused: later tries of this batch isolate rows from the start
    isolate: bool = False
    #: set once a try failed: the connection may have died after the server committed it
    retried: bool = False


@dataclass(slots=True, frozen=True)
class Committed:
    """What :meth:`TickStore.commit` did."""

    #: rows the database refused, stored in tick_rejects
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: an earlier try of this batch had committed (its reply was lost): nothing was written again
    already_committed: bool = False


class _AlreadyCommitted(Exception):
    """Rolls back a retried batch whose earlier try is found committed."""


def _position(entry_id: str) -> tuple[int, int]:
    """A Redis stream id ``ms-seq`` as a comparable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """A row the database refused, stored in ``tick_rejects``."""

    relation: str
    row: tuple[object, ...]
    entry_id: str | None
    sqlstate: str
    reason: str


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
    #: the committed offset this commit builds on (None: the stream has none yet); the commit
    #: is refused with OffsetMoved when the stored one differs
    expect: str | None = None


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def row_json(columns: Sequence[str], row: Sequence[object]) -> str:
    return json.dumps({c: _json_value(v) for c, v in zip(columns, row, strict=True)})


async def load_volume_state(
    conn: Connection, instrument_ids: Iterable[int] | None = None
) -> list[VolumeStateRow]:
    """The committed volume state, of every instrument or of ``instrument_ids``: one row each,
    the folded table overlaid by the log of later commits (queries.LOAD_VOLUME_STATE)."""
    if instrument_ids is None:
        return [tuple(r) for r in await conn.fetch(queries.LOAD_VOLUME_STATE)]
    return [tuple(r) for r in await conn.fetch(queries.LOAD_VOLUME_STATE_OF, list(instrument_ids))]


async def instrument_ids(conn: Connection) -> set[int]:
    return {r[0] for r in await conn.fetch(queries.INSTRUMENT_IDS)}


async def known_instrument_ids(conn: Connection, ids: Sequence[int]) -> set[int]:
    """Which of ``ids`` are instruments."""
    return {r[0] for r in await conn.fetch(queries.KNOWN_INSTRUMENT_IDS, list(ids))}


_RELATIONS = (("tick_data", TICK_COLUMNS), ("quote_updates", QUOTE_COLUMNS))


class TickStore:
    """Writes prepared tick rows. Not for concurrent use: one store per writer."""

    def __init__(self, pool: asyncpg.Pool, flavour: Flavour) -> None:
        self.pool = pool
        self.flavour = flavour
        self._partition_days: set[int] = set()

    @classmethod
    async def open(cls, pool: asyncpg.Pool) -> TickStore:
        async with pool.acquire() as conn:
            return cls(pool, await current_flavour(conn))

    async def commit(self, batch: TickWrite, offset: StreamOffset | None = None) -> Committed:
        """One transaction: the rows, the volume state and the stream offset. Safe to retry.

        Rows the database refuses go to ``tick_rejects`` in the same transaction (returned).
        Raises DatabaseUnavailable (connection) or DatabaseBusy (resources, a cancel, a lock) to
        be retried with the same batch; any other error as it is.

        A try can fail after the server committed it (the connection died before the reply came):
        a later try of the same batch first takes the stream's offset row, waiting for any
        transaction of an earlier try still finishing on the server, and when the committed
        offset already covers this batch, writes nothing again (``already_committed``)."""
        try:
            async with self.pool.acquire() as conn:
                if (batch.trades or batch.quotes) and self.flavour == "postgres":
                    await self._ensure_partitions(conn, batch.trades, batch.quotes)
                try:
                    return Committed(await self._commit_once(conn, batch, offset))
                except Exception as exc:
                    if batch.isolate or classify(exc) is not Failure.ROW:
                        raise
                    batch.isolate = True  # the whole batch was rolled back: again, row by row where needed
                    return Committed(await self._commit_once(conn, batch, offset))
        except _AlreadyCommitted:
            return Committed(already_committed=True)
        except Exception as exc:
            batch.retried = True
            wrapped = retryable(exc, "tick write failed")
            if wrapped is None or wrapped is exc:
                raise
            raise wrapped from exc

    async def _commit_once(
        self, conn: Connection, batch: TickWrite, offset: StreamOffset | None
    ) -> list[DeadLetter]:
        dead: list[DeadLetter] = []
        async with conn.transaction():
            if batch.retried and offset is not None:
                committed = await conn.fetchval(queries.LOCK_OFFSET, offset.stream)
                if _position(committed) >= _position(offset.last_id):
                    raise _AlreadyCommitted
            for (relation, columns), rows in zip(_RELATIONS, (batch.trades, batch.quotes), strict=True):
                if rows and not batch.isolate:
                    await _copy(conn, relation, columns, rows.rows, 0, len(rows))
                elif rows:
                    bad: list[tuple[int, BaseException]] = []
                    await _copy_isolating(conn, relation, columns, rows.rows, 0, len(rows), bad)
                    dead.extend(_dead_letter(batch, relation, rows, i, exc) for i, exc in bad)
            if dead:
                await conn.execute(
                    queries.INSERT_TICK_REJECTS,
                    offset.stream if offset else None,
                    [d.relation for d in dead],
                    [d.entry_id for d in dead],
                    [
                        row_json(TICK_COLUMNS if d.relation == "tick_data" else QUOTE_COLUMNS, d.row)
                        for d in dead
                    ],
                    [d.sqlstate for d in dead],
                    [d.reason for d in dead],
                )
            if offset is None:
                if batch.volume_rows:
                    volume = [list(column) for column in zip(*batch.volume_rows, strict=True)]
                    await conn.execute(queries.UPSERT_VOLUME_STATE, *volume)
            else:
                if batch.volume_rows:
                    await append_volume_log(conn, offset.stream, batch.volume_rows)
                runs = offset.runs
                moved_to = await conn.fetchval(
                    queries.COMMIT_OFFSET,
                    offset.stream,
                    offset.last_id,
                    offset.expect,
                    [r.run for r in runs],
                    [r.entry_no for r in runs],
                    [r.ticks for r in runs],
                    [r.lost for r in runs],
                )
                if moved_to is None:
                    raise OffsetMoved(
                        f"stream {offset.stream}: its committed offset is no longer {offset.expect or '0-0'}; "
                        "another commit of this stream finished meanwhile"
                    )
        return dead

    async def _ensure_partitions(self, conn: Connection, *row_sets: TickRows) -> None:
        """Daily partitions (of tick_data and quote_updates) for every UTC day from the batch's
        oldest to its newest row."""
        spans = [(r.first_us, r.last_us) for r in row_sets if r]
        first, last = min(s[0] for s in spans) // _DAY_US, max(s[1] for s in spans) // _DAY_US
        if first in self._partition_days and last in self._partition_days:
            return
        await conn.execute(
            queries.ENSURE_PARTITIONS, _EPOCH + timedelta(days=first), _EPOCH + timedelta(days=last)
        )
        self._partition_days.update(range(first, last + 1))


#: the element types of a volume log row's arrays, in VOLUME_LOG_COLUMNS' order after the stream
_VOLUME_LOG_KINDS = (_I4, _I4, _I8, _I8, _I8, _I8)


async def append_volume_log(conn: Connection, stream: str, rows: Sequence[VolumeStateRow]) -> None:
    """One tick_volume_log row of these volume states (a commit's), COPYed in binary."""
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=6 * len(rows))
    columns = flat.reshape(len(rows), 6)
    arrays = [array_value(kind, columns[:, k]) for k, kind in enumerate(_VOLUME_LOG_KINDS)]
    await _copy_payload(
        conn, "tick_volume_log", queries.VOLUME_LOG_COLUMNS, one_row([stream.encode(), *arrays])
    )


async def _copy(
    conn: Connection, relation: str, columns: Sequence[str], rows: BinaryRows, lo: int, hi: int
) -> None:
    await _copy_payload(conn, relation, columns, rows.payload(lo, hi))


async def _copy_payload(conn: Connection, relation: str, columns: Sequence[str], payload: bytes) -> None:
    """A complete binary COPY payload into ``relation``."""
    # a memoryview: asyncpg would take bytes for a file name. asyncpg documents (and its
    # _copy_in handles) any object with the buffer protocol; asyncpg-stubs omit that case.
    await conn.copy_to_table(
        relation,
        source=memoryview(payload),  # type: ignore[arg-type]
        columns=list(columns),
        format="binary",
    )


async def _copy_isolating(
    conn: Connection,
    relation: str,
    columns: Sequence[str],
    rows: BinaryRows,
    start: int,
    end: int,
    bad: list[tuple[int, BaseException]],
) -> None:
    """COPY rows[start:end] in halves, each in a savepoint; a half that is refused for its data is
    split again, down to single rows, which are recorded in ``bad``. Rows already written stay
    written, so rows refused only together (a unique key) are found too."""
    mid = (start + end) // 2
    for lo, hi in ((start, mid), (mid, end)) if end - start > 1 else ((start, end),):
        if lo == hi:
            continue
        try:
            async with conn.transaction():
                await _copy(conn, relation, columns, rows, lo, hi)
        except Exception as exc:
            if classify(exc) is not Failure.ROW:
                raise
            if hi - lo == 1:
                bad.append((lo, exc))
            else:
                await _copy_isolating(conn, relation, columns, rows, lo, hi, bad)


def _dead_letter(batch: TickWrite, relation: str, rows: TickRows, i: int, exc: BaseException) -> DeadLetter:
    state = sqlstate_of(exc) or "22000"  # a value refused before it reached the server has no SQLSTATE
    entry = None
    if rows.entry_of is not None and batch.entry_ids:
        at = int(rows.entry_of[i])
        entry = batch.entry_ids[at] if 0 <= at < len(batch.entry_ids) else None
    return DeadLetter(relation, rows.rows.row(i), entry, state, f"{state}: {exc}")
