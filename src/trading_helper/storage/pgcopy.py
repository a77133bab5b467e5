"""PostgreSQL's binary COPY format, built from column arrays in one pass of numpy.

asyncpg's ``copy_records_to_table`` encodes every value of every row through a Python-level codec
call; for tick batches that was as costly as everything else the writer does per tick. Here a
whole batch is written by numpy: one packed big-endian record per row (field count, then a length
and a value per column), NULL fields' values cut out with one mask. No library builds this format
from arrays (asyncpg, psycopg and pgcopy all encode row by row in Python or Cython), so it is
written here; the layout is section 'Binary Format' of PostgreSQL's COPY manual page:

* header: ``PGCOPY\\n\\377\\r\\n\\0``, int32 flags (0), int32 header extension length (0);
* per row: int16 field count, then per field int32 length (-1: NULL) and the value;
* trailer: int16 -1.

timestamptz is int64 microseconds since 2000-01-01 UTC; integers and float8 are big-endian. An
array field is ``array_send``'s format (:func:`array_value`): int32 dimensions (1), int32 has-null
flag (0), int32 element type oid, per dimension int32 length and int32 lower bound (1), then per
element an int32 length and the value. asyncpg takes array parameters only as Python sequences
and checks every element against ``collections.abc.Iterable`` (to find sub-arrays): for the
writer's volume state (six arrays of an element per instrument a commit) that cost more than the
rest of its commit, so the volume log row goes in as one binary COPY row (:func:`one_row`).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
#: 2000-01-01 UTC (PostgreSQL's epoch) in microseconds since 1970-01-01 UTC
PG_EPOCH_US = 946_684_800 * 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Kind(enum.Enum):
    """The column types our tables' COPY rows use, with their binary wire format."""

    TIMESTAMPTZ = "timestamptz"
    INT4 = "integer"
    INT8 = "bigint"
    FLOAT8 = "double precision"

    @property
    def wire(self) -> str:
        """The value's numpy format on the wire."""
        return _WIRE[self]


_WIRE = {Kind.TIMESTAMPTZ: ">i8", Kind.INT4: ">i4", Kind.INT8: ">i8", Kind.FLOAT8: ">f8"}
#: element type oids of the arrays :func:`array_value` builds (pg_type.oid of int4 and int8)
_ARRAY_OF = {Kind.INT4: 23, Kind.INT8: 20}
_INT4_RANGE = (-(2**31), 2**31 - 1)


#: one column's values and, where some may be NULL, the mask of NULL rows
Column = tuple[npt.NDArray[np.generic], npt.NDArray[np.bool_] | None]


@dataclass(slots=True, frozen=True)
class BinaryRows:
    """Rows in binary COPY format (without header and trailer) and where each row ends."""

    kinds: tuple[Kind, ...]
    data: bytes
    ends: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.ends)

    def payload(self, lo: int = 0, hi: int | None = None) -> bytes:
        """A complete COPY payload of rows ``lo:hi``."""
        hi = len(self) if hi is None else hi
        start = int(self.ends[lo - 1]) if lo > 0 else 0
        end = int(self.ends[hi - 1]) if hi > 0 else 0
        return b"".join((HEADER, self.data[start:end], TRAILER))

    def row(self, i: int) -> tuple[object, ...]:
        """Row ``i`` as Python values (datetimes for timestamps; an out-of-range one as its µs)."""
        start = int(self.ends[i - 1]) if i > 0 else 0
        data, pos = self.data, start + 2
        out: list[object] = []
        for kind in self.kinds:
            size = int.from_bytes(data[pos : pos + 4], "big", signed=True)
            pos += 4
            if size < 0:
                out.append(None)
                continue
            raw = data[pos : pos + size]
            pos += size
            value = np.frombuffer(raw, dtype=kind.wire)[0].item()
            out.append(_datetime(value + PG_EPOCH_US) if kind is Kind.TIMESTAMPTZ else value)
        return tuple(out)

    def rows(self) -> list[tuple[object, ...]]:
        return [self.row(i) for i in range(len(self))]


def _datetime(us: int) -> datetime | int:
    try:
        return _EPOCH + timedelta(microseconds=us)
    except OverflowError:
        return us


def empty(kinds: Sequence[Kind]) -> BinaryRows:
    return BinaryRows(tuple(kinds), b"", np.zeros(0, np.int64))


def encode(kinds: Sequence[Kind], columns: Sequence[Column]) -> BinaryRows:
    """Rows from one array per column (timestamps as int64 µs since 1970-01-01 UTC)."""
    if len(kinds) != len(columns):
        raise ValueError(f"{len(columns)} columns for {len(kinds)} kinds")
    n = len(columns[0][0]) if columns else 0
    if n == 0:
        return empty(kinds)
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for k, kind in enumerate(kinds):
        fields += [(f"l{k}", ">i4"), (f"v{k}", kind.wire)]
    layout = np.dtype(fields)
    size = layout.itemsize
    packed = np.empty(n, layout)
    offsets = layout.fields
    assert offsets is not None  # a structured dtype: it was built from named fields
    packed["n"] = len(kinds)
    keep: npt.NDArray[np.bool_] | None = None
    lengths: npt.NDArray[np.int64] | None = None
    for k, (kind, (values, null)) in enumerate(zip(kinds, columns, strict=True)):
        width = np.dtype(kind.wire).itemsize
        packed[f"v{k}"] = values - PG_EPOCH_US if kind is Kind.TIMESTAMPTZ else values
        if null is None or not null.any():
            packed[f"l{k}"] = width
            continue
        packed[f"l{k}"] = np.where(null, -1, width)
        if keep is None or lengths is None:
            keep = np.ones((n, size // 2), np.bool_)
            lengths = np.full(n, size, np.int64)
        offset = offsets[f"v{k}"][1]
        keep[null, offset // 2 : (offset + width) // 2] = False
        lengths -= null * width
    if keep is None or lengths is None:
        return BinaryRows(tuple(kinds), packed.tobytes(), np.arange(1, n + 1, dtype=np.int64) * size)
    # every field is 2, 4 or 8 bytes long: NULL values are cut out as whole 16-bit words
    return BinaryRows(
        tuple(kinds), packed.view(np.uint16).reshape(n, size // 2)[keep].tobytes(), np.cumsum(lengths)
    )


def concat(parts: Sequence[BinaryRows]) -> BinaryRows:
    """The rows of ``parts`` (of one column layout) one after the other."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        raise ValueError("no rows to join: their column kinds are unknown")
    kinds = parts[0].kinds
    if any(p.kinds != kinds for p in parts):
        raise ValueError("rows of different column kinds cannot be joined")
    shifts = np.cumsum([0] + [len(p.data) for p in parts[:-1]])
    ends = np.concatenate([p.ends + shift for p, shift in zip(parts, shifts, strict=True)])
    return BinaryRows(kinds, b"".join(p.data for p in parts), ends.astype(np.int64))


def array_value(kind: Kind, values: npt.NDArray[np.integer]) -> bytes:
    """A one-dimensional array of integers without NULLs, as ``array_send`` writes it.

    Raises OverflowError for an int4 array with a value out of int4's range (numpy would wrap it)."""
    if kind not in _ARRAY_OF:
        raise ValueError(f"no binary array of {kind.value} here")
    if kind is Kind.INT4 and len(values) and (values.min() < _INT4_RANGE[0] or values.max() > _INT4_RANGE[1]):
        raise OverflowError(
            f"a value of this integer array is out of the range of integer: {values.min()}..{values.max()}"
        )
    elements = np.empty(len(values), np.dtype([("l", ">i4"), ("v", kind.wire)]))
    elements["l"] = np.dtype(kind.wire).itemsize
    elements["v"] = values
    return struct.pack(">iiiii", 1, 0, _ARRAY_OF[kind], len(values), 1) + elements.tobytes()


def one_row(fields: Sequence[bytes]) -> bytes:
    """A complete COPY payload of one row of fields already in binary (none NULL; text as UTF-8)."""
    parts = [HEADER, struct.pack(">h", len(fields))]
    for value in fields:
        parts += [struct.pack(">i", len(value)), value]
    parts.append(TRAILER)
    return b"".join(parts)
