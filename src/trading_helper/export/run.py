"""An export end to end: the database's CSV chunks through the chosen encoder, to a file (the
command line, with a Rich progress bar) or to an HTTP response (``api/routes/export.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import asyncpg

from trading_helper.candles.service import EARLIEST, LATEST, as_ist
from trading_helper.errors import InvalidRange
from trading_helper.export.columns import Kind
from trading_helper.export.encode import encoder
from trading_helper.export.formats import Format
from trading_helper.export.source import CHUNK_BYTES, ExportRequest, Progress, csv_chunks
from trading_helper.models import Instrument
from trading_helper.storage.db import db_errors
from trading_helper.storage.instruments import list_error, resolve_many
from trading_helper.storage.sql_export import Zone
from trading_helper.timeframes import parse_timeframe


async def build_request(
    pool: asyncpg.Pool,
    kind: Kind,
    refs: Sequence[str],
    *,
    interval: str,
    start: datetime,
    end: datetime,
    zone: Zone,
    broker: str | None,
) -> ExportRequest:
    """The request, its instruments resolved (every bad reference named at once); naive times are
    IST, as everywhere else."""
    start, end = as_ist(start), as_ist(end)
    if not (EARLIEST <= start <= LATEST and EARLIEST <= end <= LATEST):
        raise InvalidRange(f"from and to must lie between {EARLIEST.date()} and {LATEST.date()}")
    with db_errors("cannot resolve the instruments"):
        async with pool.acquire() as conn:
            found, problems = await resolve_many(conn, list(refs), broker)
    if problems:
        raise list_error(problems)
    return ExportRequest(kind, tuple(found), start, end, parse_timeframe(interval), zone)


async def export_stream(
    pool: asyncpg.Pool,
    req: ExportRequest,
    fmt: Format,
    *,
    progress: Progress | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> AsyncIterator[bytes]:
    """The export's bytes, in order. Parquet encoding runs in a worker thread of its own (pyarrow
    releases the GIL), so a large export does not hold up the event loop it shares with API
    requests; one thread for the whole export, not the loop's shared executor, whose threads (each
    with its own stack and malloc arena) would take turns and multiply what the export holds."""
    enc = encoder(fmt, req.kind, req.zone)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-encode") as worker:

        async def encoded(call: Callable[..., bytes], *args: bytes) -> bytes:
            return await loop.run_in_executor(worker, call, *args) if fmt == "parquet" else call(*args)

        yield enc.start()
        async for chunk in csv_chunks(pool, req, chunk_bytes=chunk_bytes, progress=progress):
            out = await encoded(enc.feed, chunk)
            if out:
                yield out
        yield await encoded(enc.finish)


def describe(instruments: Sequence[Instrument]) -> str:
    return ", ".join(f"{i.exchange}:{i.tradingsymbol}" for i in instruments[:3]) + (
        f" and {len(instruments) - 3} more" if len(instruments) > 3 else ""
    )


async def export_to_file(
    pool: asyncpg.Pool, req: ExportRequest, fmt: Format, path: Path, *, progress: Progress | None = None
) -> int:
    """Writes the export to ``path`` (through a temporary file beside it, renamed at the end, so a
    failed export leaves no half file under the name); returns the bytes written."""
    tmp = path.with_name(f".{path.name}.part")
    written = 0
    try:
        with tmp.open("wb") as out:
            async for data in export_stream(pool, req, fmt, progress=progress):
                out.write(data)
                written += len(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return written
