"""``trading-helper import candles PATH``: candles from a CSV or Parquet file into broker history.

The file has the candle columns of ``columns.py`` (an export reads back as is). Required:
``time``, ``open``, ``high``, ``low``, ``close``, ``volume``; ``instrument`` unless
``--instrument`` names one for the whole file, ``interval`` unless ``--interval`` does;
``open_interest`` is optional and ``source`` (an export's) is ignored: imported candles are
broker history whose source is the import's (``--source``, default ``import``).

Each row is checked and either taken or refused with a reason (:data:`REASONS`); the report
counts both and shows the first refusals with their row numbers. Taken rows are written in one
transaction as broker history (the backfill's own statement: a row already there is replaced) and
each instrument's imported span is recorded as fetched (``fetch_coverage``), so the backfill never
asks a broker for it again. ``--dry-run`` checks everything and writes nothing.

Memory: the file is read in batches; what grows with its size is the set of (instrument,
timeframe, bucket) seen, for the duplicate check (about 100 bytes a row).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

import asyncpg
import pyarrow as pa

from trading_helper.candles.backfill import our_bucket
from trading_helper.errors import ValidationError
from trading_helper.export.files import read_batches
from trading_helper.storage import sql_candles
from trading_helper.storage.db import Connection, db_errors
from trading_helper.storage.instruments import resolve_instrument
from trading_helper.timeframes import IST, Timeframe, parse_timeframe

REQUIRED: Final = ("time", "open", "high", "low", "close", "volume")
#: why a row is refused
REASONS: Final = {
    "missing_value": "a required value is empty",
    "bad_instrument": "the instrument reference is invalid or unknown",
    "bad_interval": "not one of 1m 5m 15m 1h 1d",
    "bad_time": "not an ISO 8601 time",
    "naive_time": "a time without offset (give --assume-tz)",
    "not_aligned": "not the start of a bucket of its interval (timeframes.py origin)",
    "bad_price": "a price that is not a positive finite number",
    "ohlc_inconsistent": "low above open/close or high below them",
    "bad_volume": "volume or open interest not a whole number >= 0",
    "duplicate": "the same instrument, interval and bucket earlier in the file",
}
ZONES: Final = {"ist": IST, "utc": UTC}
SHOWN = 20
_CSV_TYPES: Final[dict[str, pa.DataType]] = {
    "instrument": pa.string(),
    "interval": pa.string(),
    "time": pa.string(),
    "source": pa.string(),
    **{name: pa.float64() for name in ("open", "high", "low", "close", "volume", "open_interest")},
}


@dataclass(slots=True)
class Span:
    first: datetime
    last: datetime
    candles: int = 0


@dataclass(slots=True)
class ImportReport:
    dry_run: bool
    rows: int = 0
    taken: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[int, str, str]] = field(default_factory=list)
    #: (instrument label, timeframe) -> the imported span
    spans: dict[tuple[str, str], Span] = field(default_factory=dict)

    def refuse(self, row: int, reason: str, detail: str) -> None:
        self.refused[reason] += 1
        if len(self.examples) < SHOWN:
            self.examples.append((row, reason, detail[:120]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "rows": self.rows,
            "taken": self.taken,
            "refused": dict(self.refused),
            "first_refusals": [{"row": r, "reason": why, "detail": d} for r, why, d in self.examples],
            "imported": [
                {
                    "instrument": label,
                    "interval": tf,
                    "from": s.first.astimezone(IST).isoformat(),
                    "to": s.last.astimezone(IST).isoformat(),
                    "candles": s.candles,
                }
                for (label, tf), s in self.spans.items()
            ],
        }


def _time(value: Any, assume: timezone | None) -> tuple[datetime | None, str]:
    if isinstance(value, datetime):
        ts = value
    else:
        try:
            ts = datetime.fromisoformat(str(value).strip())
        except ValueError:
            return None, "bad_time"
    if ts.tzinfo is None or ts.utcoffset() is None:
        if assume is None:
            return None, "naive_time"
        ts = ts.replace(tzinfo=assume)
    return ts, ""


def _aligned(tf: Timeframe, ts: datetime) -> datetime | None:
    """The bucket ``ts`` starts; for 1d also a broker's day stamp (00:00 IST) of that bucket."""
    if tf.bucket_start(ts) == ts:
        return tf.bucket_start(ts)
    if tf is Timeframe.D1:
        bucket = our_bucket(tf, ts)
        if bucket - ts == timedelta(minutes=15):
            return bucket
    return None


def _whole(value: Any, *, optional: bool) -> tuple[bool, int | None]:
    if value is None:
        return optional, None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return False, None
    number = int(value)
    return number >= 0, number


@dataclass(slots=True)
class _Row:
    iid: int
    tf: Timeframe
    bucket: datetime
    ohlc: tuple[float, float, float, float]
    volume: int
    oi: int | None


class CandleImport:
    def __init__(
        self,
        conn: Connection,
        *,
        instrument: str | None,
        interval: str | None,
        assume_tz: str | None,
        broker: str | None,
        report: ImportReport,
    ) -> None:
        self.conn = conn
        self.default_ref = instrument
        self.default_tf = parse_timeframe(interval) if interval else None
        if assume_tz is not None and assume_tz not in ZONES:
            raise ValidationError(f"--assume-tz is ist or utc, not {assume_tz!r}")
        self.assume = ZONES[assume_tz] if assume_tz else None
        self.broker = broker
        self.report = report
        self._instruments: dict[str, tuple[int, str] | None] = {}
        self._seen: set[tuple[int, Timeframe, datetime]] = set()

    async def _instrument(self, ref: str) -> tuple[int, str] | None:
        if ref not in self._instruments:
            try:
                inst = await resolve_instrument(self.conn, ref, self.broker)
                assert inst.id is not None
                self._instruments[ref] = (inst.id, f"{inst.exchange}:{inst.tradingsymbol}")
            except ValidationError:
                self._instruments[ref] = None
        return self._instruments[ref]

    def check_columns(self, batch: pa.RecordBatch) -> None:
        have = set(batch.schema.names)
        missing = [c for c in REQUIRED if c not in have]
        if "instrument" not in have and self.default_ref is None:
            missing.append("instrument (or --instrument)")
        if "interval" not in have and self.default_tf is None:
            missing.append("interval (or --interval)")
        if missing:
            raise ValidationError(f"the file lacks the column(s) {', '.join(missing)}")

    async def rows(self, batch: pa.RecordBatch, first_row: int) -> list[_Row]:
        """The batch's rows that pass every check (the rest counted in the report)."""
        cols: dict[str, list[Any]] = {name: batch.column(name).to_pylist() for name in batch.schema.names}
        n = batch.num_rows
        refs: list[Any] = cols.get("instrument", [self.default_ref] * n)
        intervals: list[Any] = cols.get("interval", [None] * n)
        ois: list[Any] = cols.get("open_interest", [None] * n)
        out: list[_Row] = []
        for k in range(n):
            row = first_row + k
            values: list[Any] = [cols[c][k] for c in REQUIRED]
            if any(v is None for v in values) or refs[k] is None:
                self.report.refuse(row, "missing_value", ",".join(str(v) for v in values))
                continue
            found = await self._instrument(str(refs[k]))
            if found is None:
                self.report.refuse(row, "bad_instrument", str(refs[k]))
                continue
            try:
                tf = parse_timeframe(intervals[k]) if intervals[k] is not None else self.default_tf
            except ValidationError:
                tf = None
            if tf is None:
                self.report.refuse(row, "bad_interval", str(intervals[k]))
                continue
            ts, why = _time(values[0], self.assume)
            if ts is None:
                self.report.refuse(row, why, str(values[0]))
                continue
            bucket = _aligned(tf, ts)
            if bucket is None:
                self.report.refuse(row, "not_aligned", f"{ts.isoformat()} for {tf.value}")
                continue
            try:
                o, h, lo, c = (float(v) for v in values[1:5])
            except (TypeError, ValueError):
                self.report.refuse(row, "bad_price", str(values[1:5]))
                continue
            if not all(math.isfinite(p) and p > 0 for p in (o, h, lo, c)):
                self.report.refuse(row, "bad_price", str((o, h, lo, c)))
                continue
            if not (lo <= min(o, c) and h >= max(o, c)):
                self.report.refuse(row, "ohlc_inconsistent", f"o={o} h={h} l={lo} c={c}")
                continue
            ok_v, volume = _whole(values[5], optional=False)
            ok_oi, oi = _whole(ois[k], optional=True)
            if not (ok_v and ok_oi) or volume is None:
                self.report.refuse(row, "bad_volume", f"volume={values[5]} open_interest={ois[k]}")
                continue
            key = (found[0], tf, bucket)
            if key in self._seen:
                self.report.refuse(row, "duplicate", f"{found[1]} {tf.value} {bucket.isoformat()}")
                continue
            self._seen.add(key)
            out.append(_Row(found[0], tf, bucket, (o, h, lo, c), volume, oi))
            span = self.report.spans.setdefault((found[1], tf.value), Span(bucket, bucket))
            span.first, span.last = min(span.first, bucket), max(span.last, bucket)
            span.candles += 1
        return out

    async def store(self, rows: list[_Row], source: str) -> None:
        groups: dict[tuple[int, Timeframe], list[_Row]] = {}
        for r in rows:
            groups.setdefault((r.iid, r.tf), []).append(r)
        for (iid, tf), group in groups.items():
            await self.conn.execute(
                sql_candles.STORE_BROKER_CANDLES,
                iid,
                tf.value,
                [r.bucket for r in group],
                *([r.ohlc[i] for r in group] for i in range(4)),
                [r.volume for r in group],
                source,
                [r.oi for r in group],
            )

    async def record_coverage(self, source: str) -> None:
        ids = {label: iid for iid, label in (v for v in self._instruments.values() if v is not None)}
        for (label, tf_text), span in self.report.spans.items():
            tf = Timeframe(tf_text)
            await self.conn.execute(
                sql_candles.RECORD_FETCH,
                ids[label],
                tf.value,
                span.first,
                span.last + tf.width,
                span.candles,
                source,
            )


async def import_candles(
    pool: asyncpg.Pool,
    path: Path,
    *,
    instrument: str | None = None,
    interval: str | None = None,
    assume_tz: str | None = None,
    source: str = "import",
    broker: str | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Checks every row of ``path`` and (unless ``dry_run``) writes the good ones as broker history
    with their spans recorded as fetched, all in one transaction."""
    report = ImportReport(dry_run=dry_run)
    with db_errors(f"cannot import {path.name}"):
        async with pool.acquire() as conn, conn.transaction():
            job = CandleImport(
                conn,
                instrument=instrument,
                interval=interval,
                assume_tz=assume_tz,
                broker=broker,
                report=report,
            )
            for batch in read_batches(path, _CSV_TYPES):
                if report.rows == 0:
                    job.check_columns(batch)
                taken = await job.rows(batch, report.rows + 1)
                report.rows += batch.num_rows
                report.taken += len(taken)
                if not dry_run:
                    await job.store(taken, source)
                if progress is not None:
                    progress(report.rows)
            if not dry_run:
                await job.record_coverage(source)
    return report
