"""The file formats of an export: CSV (the database's own CSV behind a header line) and Parquet
(pyarrow: the CSV chunks parsed with the export's column types, one row group per block).

Both are encoders fed the CSV chunks of :func:`~trading_helper.export.source.csv_chunks` and
returning the bytes to write next, so a file and an HTTP response stream the same bytes and
nothing holds the whole export.
"""

from __future__ import annotations

import io
from typing import Protocol

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trading_helper.export.columns import COLUMNS, Kind, arrow_type, names, schema
from trading_helper.export.formats import Format
from trading_helper.storage.sql_export import Zone

#: rows of one Parquet row group: each CSV chunk is parsed as it comes (a parse holds a few times
#: its input, so small pieces keep the peak low), the tables kept until a row group is full
ROW_GROUP_ROWS = 65_536


class Encoder(Protocol):
    def start(self) -> bytes: ...
    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class CsvEncoder:
    def __init__(self, kind: Kind) -> None:
        self._header = (",".join(names(kind)) + "\n").encode()

    def start(self) -> bytes:
        return self._header

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self) -> bytes:
        return b""


class _Drain(io.RawIOBase):
    """A write-only stream whose written bytes are taken out as they come; ``tell`` keeps counting
    (Parquet writes the offsets of its row groups into the footer)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class ParquetEncoder:
    def __init__(self, kind: Kind, zone: Zone, *, row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self.schema = schema(kind, zone)
        self._read = pacsv.ReadOptions(column_names=names(kind), block_size=1 << 22, use_threads=False)
        self._convert = pacsv.ConvertOptions(
            column_types={c.name: arrow_type(c, zone) for c in COLUMNS[kind]},
            strings_can_be_null=False,  # COPY writes NULL as an empty field, '' as ""
            quoted_strings_can_be_null=False,
        )
        self._group_rows = row_group_rows
        self._pending = bytearray()
        self._tables: list[pa.Table] = []
        self._rows = 0
        self._sink = _Drain()
        self._writer = pq.ParquetWriter(pa.PythonFile(self._sink, mode="w"), self.schema, compression="zstd")

    def start(self) -> bytes:
        return self._sink.take()

    def feed(self, chunk: bytes) -> bytes:
        self._pending += chunk
        cut = self._pending.rfind(b"\n") + 1  # a row may straddle two chunks
        if cut:
            self._parse(bytes(self._pending[:cut]))
            del self._pending[:cut]
            if self._rows >= self._group_rows:
                self._write()
        return self._sink.take()

    def _parse(self, data: bytes) -> None:
        table = pacsv.read_csv(io.BytesIO(data), read_options=self._read, convert_options=self._convert)
        self._tables.append(table.cast(self.schema))
        self._rows += table.num_rows

    def _write(self) -> None:
        if self._tables:
            self._writer.write_table(pa.concat_tables(self._tables), row_group_size=max(self._rows, 1))
            self._tables.clear()
            self._rows = 0

    def finish(self) -> bytes:
        if self._pending:
            self._parse(bytes(self._pending))
            self._pending.clear()
        self._write()
        self._writer.close()
        return self._sink.take()


def encoder(fmt: Format, kind: Kind, zone: Zone) -> Encoder:
    if fmt == "csv":
        return CsvEncoder(kind)
    return ParquetEncoder(kind, zone)
