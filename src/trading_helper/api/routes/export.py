"""Exports: candles (the merged series, with ``source``) and ticks as CSV or Parquet, streamed.

The same bytes as ``trading-helper export`` writes to a file (``export/run.py``): the answer is
streamed as the database produces it, so its size is not bounded by the server's memory. The
request is checked (instruments, range) before the first byte; a failure after that ends the
stream early, which a client sees as a truncated body (a Parquet file without its footer).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from trading_helper.api.deps import RuntimeDep
from trading_helper.api.openapi import WITH_PARAMS, Responses
from trading_helper.api.schemas import ErrorOut, Interval, RefText
from trading_helper.export.formats import MEDIA_TYPES, Format

Kind = Literal["candles", "ticks"]

router = APIRouter(prefix="/api/export", tags=["export"])

MAX_INSTRUMENTS = 1000
_ERRORS: Responses = {
    200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "the export, streamed"},
    400: {"model": ErrorOut, "description": "invalid range (`invalid_range`)"},
    404: {"model": ErrorOut, "description": "unknown instrument (every unknown reference named)"},
}
_DOC = (
    "Streams {what} of the instruments in [from, to) as CSV (a header line, then one row each) or "
    "Parquet (typed columns: times as timestamps in the asked zone, prices float64, volumes int64). "
    "Times are written in IST (+05:30) or UTC (`tz`); naive inputs are IST. Columns: {columns}."
)


async def _export(
    runtime: RuntimeDep,
    kind: Kind,
    instrument: list[str],
    interval: str,
    start: datetime,
    end: datetime,
    fmt: Format,
    tz: Literal["ist", "utc"],
) -> StreamingResponse:
    from trading_helper.export.run import build_request, export_stream  # pyarrow loads on first use

    broker = runtime.broker.name if runtime.broker is not None else None
    req = await build_request(
        runtime.reader, kind, instrument, interval=interval, start=start, end=end, zone=tz, broker=broker
    )
    name = f"{kind}_{req.timeframe.value + '_' if kind == 'candles' else ''}{start:%Y%m%d}_{end:%Y%m%d}.{fmt}"
    return StreamingResponse(
        export_stream(runtime.reader, req, fmt),
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


Instruments = Annotated[
    list[RefText],
    Query(min_length=1, max_length=MAX_INSTRUMENTS, description="references (repeat the parameter)"),
]
From = Annotated[datetime, Query(alias="from", description="ISO 8601; naive = IST")]
To = Annotated[datetime, Query(alias="to", description="ISO 8601; naive = IST")]
FormatQ = Annotated[Literal["csv", "parquet"], Query(alias="format")]
Zone = Annotated[Literal["ist", "utc"], Query(description="zone of the written times")]


@router.get(
    "/candles",
    summary="Export candles (CSV or Parquet)",
    description=_DOC.format(
        what="the merged candle series (as GET /api/candles answers it, without fetching gaps)",
        columns="instrument, interval, time, open, high, low, close, volume, open_interest, source",
    ),
    response_class=StreamingResponse,
    responses={**WITH_PARAMS, **_ERRORS},
)
async def export_candles(
    runtime: RuntimeDep,
    instrument: Instruments,
    start: From,
    end: To,
    interval: Annotated[Interval, Query()] = "1m",
    fmt: FormatQ = "csv",
    tz: Zone = "ist",
) -> StreamingResponse:
    return await _export(runtime, "candles", instrument, interval, start, end, fmt, tz)


@router.get(
    "/ticks",
    summary="Export ticks (CSV or Parquet)",
    description=_DOC.format(
        what="the stored ticks (archived F&O ticks included)",
        columns="instrument, time, exchange_time, ltp, last_qty, volume, volume_delta, avg_price, "
        "open_interest, bid_price, bid_qty, ask_price, ask_qty, received_at",
    ),
    response_class=StreamingResponse,
    responses={**WITH_PARAMS, **_ERRORS},
)
async def export_ticks(
    runtime: RuntimeDep,
    instrument: Instruments,
    start: From,
    end: To,
    fmt: FormatQ = "csv",
    tz: Zone = "ist",
) -> StreamingResponse:
    return await _export(runtime, "ticks", instrument, "1m", start, end, fmt, tz)
