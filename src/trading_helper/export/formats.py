"""The file formats of an export and their media types (no pyarrow import: the API's route module
reads these at start, and pyarrow loads only when an export runs)."""

from __future__ import annotations

from typing import Final, Literal

Format = Literal["csv", "parquet"]
FORMATS: Final[tuple[Format, ...]] = ("csv", "parquet")
MEDIA_TYPES: Final[dict[Format, str]] = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
