"""Reading files in the export's column sets (``columns.py``): a whole export back with its exact
types (:func:`read_export`), or any candle file in bounded batches (:func:`read_batches`, for the
import), CSV or Parquet by the file's content."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trading_helper.errors import ValidationError
from trading_helper.export.columns import COLUMNS, Kind, arrow_type, schema
from trading_helper.storage.sql_export import Zone

PARQUET_MAGIC = b"PAR1"
BATCH_ROWS = 65_536


def is_parquet(head: bytes) -> bool:
    return head[:4] == PARQUET_MAGIC


def read_export(data: bytes | Path, kind: Kind, zone: Zone) -> pa.Table:
    """An export (bytes or a file) as one table of the export's schema, CSV or Parquet."""
    raw = data.read_bytes() if isinstance(data, Path) else data
    if is_parquet(raw):
        return pq.read_table(io.BytesIO(raw))
    convert = pacsv.ConvertOptions(
        column_types={c.name: arrow_type(c, zone) for c in COLUMNS[kind]},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    return pacsv.read_csv(io.BytesIO(raw), convert_options=convert).cast(schema(kind, zone))


def read_batches(path: Path, text_columns: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    """The file's rows in batches of at most :data:`BATCH_ROWS` (memory bounded whatever its
    size). CSV columns named in ``text_columns`` are read with that type (others as inferred);
    Parquet columns keep the file's own types."""
    try:
        with path.open("rb") as probe:
            parquet = is_parquet(probe.read(4))
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        if parquet:
            yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
            return
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=4 << 20),
            convert_options=pacsv.ConvertOptions(
                column_types=text_columns, strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
        yield from reader
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValidationError(f"{path} is not a readable CSV or Parquet file: {exc}") from exc
