"""The export's rows, streamed from the database as CSV in bounded chunks.

PostgreSQL writes the rows itself (``COPY (query) TO STDOUT WITH CSV``): no row becomes a Python
object, which is what makes 200,000 rows/s and more possible on one core, and a CSV export is these
bytes as they come. Memory stays bounded whatever the range: the server streams a COPY without
holding its result, the chunks pass through a queue of :data:`QUEUE_CHUNKS` entries of about
``chunk_bytes`` each, and the producer waits while the consumer (a file, an HTTP client) is slow.

One COPY reads a batch of :data:`BATCH_INSTRUMENTS` instruments. Candles are read through
``read_candles`` (the merged series, with ``source``) in windows of the timeframe's longest request
span; ticks from ``tick_archive`` (archived F&O ticks) then ``tick_data``, each instrument in time
order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from trading_helper.brokers.history import history_chunks
from trading_helper.errors import InvalidRange
from trading_helper.export.columns import KINDS, Kind
from trading_helper.models import Instrument
from trading_helper.storage import sql_export
from trading_helper.storage.db import Connection, db_errors
from trading_helper.storage.sql_export import Zone
from trading_helper.timeframes import Timeframe

#: a COPY's client-side bound (asyncpg's ``command_timeout``, the API pool's statement bound
#: behind pgBouncer, would otherwise cut an export of minutes): six hours
COPY_TIMEOUT_S = 6 * 3600.0

CHUNK_BYTES = 1 << 20
QUEUE_CHUNKS = 4
#: instruments read by one COPY: a COPY per instrument spent more on its round trips and planning
#: (asyncpg prepares the query to pass its arguments, the planner opens every partition) than on
#: its rows; 2.3x the time of one COPY of the same rows with 3,000 ticks per instrument
BATCH_INSTRUMENTS = 50

#: called with (instruments done, rows so far) after each chunk and each batch of instruments
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ExportRequest:
    kind: Kind
    instruments: tuple[Instrument, ...]
    start: datetime
    end: datetime
    timeframe: Timeframe = Timeframe.M1
    zone: Zone = "ist"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidRange(f"unknown export kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise InvalidRange("from and to must carry a time zone")
        if self.start >= self.end:
            raise InvalidRange(f"from ({self.start.isoformat()}) must be before to ({self.end.isoformat()})")
        if not self.instruments:
            raise InvalidRange("no instrument to export")

    def windows(self) -> list[tuple[datetime, datetime]]:
        """[start, end) cut into read windows: the longest span one candle read may cover (ticks:
        one window, the COPY streams it)."""
        if self.kind != "candles":
            return [(self.start, self.end)]
        return history_chunks(self.start, self.end, self.timeframe.facts.max_span)


def _label(inst: Instrument) -> str:
    return f"{inst.exchange}:{inst.tradingsymbol}"


class _Chunker:
    """Collects COPY data into chunks of about ``size`` bytes for the queue, counting rows."""

    def __init__(
        self, queue: asyncio.Queue[bytes | BaseException | None], size: int, progress: Progress | None
    ) -> None:
        self.queue = queue
        self.size = size
        self.buffer = bytearray()
        self.rows = 0
        self.instruments = 0
        self.progress = progress

    async def __call__(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= self.size:
            await self.flush()

    async def flush(self) -> None:
        if self.buffer:
            chunk = bytes(self.buffer)
            self.buffer.clear()
            # every value is one line: instrument labels and sources hold no line break
            self.rows += chunk.count(b"\n")
            self._report()  # rows as they come: a batch of busy instruments may take a while
            await self.queue.put(chunk)

    def instruments_done(self, count: int) -> None:
        self.instruments += count
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.instruments, self.rows + self.buffer.count(b"\n"))


def batches(req: ExportRequest) -> list[tuple[Instrument, ...]]:
    """The request's instruments in the groups read by one COPY each, in order."""
    items = req.instruments
    return [items[at : at + BATCH_INSTRUMENTS] for at in range(0, len(items), BATCH_INSTRUMENTS)]


async def _copy_all(conn: Connection, req: ExportRequest, put: _Chunker) -> None:
    """Every COPY of the request (one per batch of instruments), in order, each chunk handed to
    ``put``."""
    for batch in batches(req):
        ids = [i.id for i in batch]
        labels = [_label(i) for i in batch]
        if req.kind == "candles":
            windows = req.windows()
            await conn.copy_from_query(
                sql_export.CANDLES,
                [i for i in ids for _ in windows],
                [label for label in labels for _ in windows],
                req.timeframe.value,
                [lo for _ in batch for lo, _hi in windows],
                [hi for _ in batch for _lo, hi in windows],
                output=put,
                format="csv",
                timeout=COPY_TIMEOUT_S,
            )
        else:
            await conn.copy_from_query(
                sql_export.TICKS,
                ids,
                labels,
                req.start,
                req.end,
                output=put,
                format="csv",
                timeout=COPY_TIMEOUT_S,
            )
        put.instruments_done(len(batch))


async def csv_chunks(
    pool: asyncpg.Pool,
    req: ExportRequest,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    progress: Progress | None = None,
) -> AsyncIterator[bytes]:
    """The request's rows as CSV (no header), in chunks of about ``chunk_bytes``; instruments in the
    order given, each in time order."""
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=QUEUE_CHUNKS)
    chunker = _Chunker(queue, chunk_bytes, progress)

    async def produce() -> None:
        try:
            with db_errors(f"cannot export {req.kind}"):
                # SET LOCAL in a transaction, never a session's SET: behind pgBouncer's
                # transaction pooling a session setting would stay on a server connection that
                # other clients get next
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute(sql_export.NO_TIMEOUT)
                    await conn.execute(sql_export.SET_ZONE[req.zone])
                    await _copy_all(conn, req, chunker)
            await chunker.flush()
            await queue.put(None)
        except Exception as exc:  # handed to the consumer, raised there
            await queue.put(exc)

    task = asyncio.create_task(produce(), name="export-copy")
    try:
        while True:
            item = await queue.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
