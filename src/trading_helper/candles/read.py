"""The one read path: ``read_candles`` in SQL (live where fully captured, else broker, else the
partial live candle), used by the API, the dashboards and the chart page alike."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from trading_helper.candles.metrics import READ_SECONDS
from trading_helper.models import CANDLE_WIRE_FIELDS, Candle
from trading_helper.storage.db import Connection
from trading_helper.timeframes import Timeframe

T = TypeVar("T")

READ = (
    "SELECT bucket, open, high, low, close, volume, open_interest, source FROM read_candles($1, $2, $3, $4)"
)

#: each wire field (``models.CANDLE_WIRE_FIELDS``) as SQL over a ``read_candles`` row: the row's
#: column of that name, but the time, which is the bucket in IST (+05:30) as ``Candle.wire`` writes it
_WIRE_SQL = {"time": """to_char(bucket AT TIME ZONE 'Asia/Kolkata', 'YYYY-MM-DD"T"HH24:MI:SS') || '+05:30'"""}

#: the same series as one JSON array of wire candles, built by the database: the API's answer for a
#: day of 1m is ~375 candles, and formatting them in Python costs more than reading them (``trading-helper
#: bench query`` measures both); the keys come from the one list, so the two cannot drift apart
READ_JSON = (
    "SELECT coalesce(json_agg(json_build_object("
    + ", ".join(f"'{name}', {_WIRE_SQL.get(name, name)}" for name in CANDLE_WIRE_FIELDS)
    + ") ORDER BY bucket), '[]')::text FROM read_candles($1, $2, $3, $4)"
)

#: a reader of one instrument's series: ``read_candles`` (models) or ``read_candles_json`` (wire text)
Reader = Callable[[Connection, int, Timeframe, datetime, datetime], Awaitable[T]]


async def read_candles(
    conn: Connection, instrument_id: int, timeframe: Timeframe, start: datetime, end: datetime
) -> list[Candle]:
    """Buckets starting in [start, end), in time order, one per bucket."""
    began = time.perf_counter()
    rows = await conn.fetch(READ, instrument_id, timeframe.value, start, end)
    READ_SECONDS.labels(timeframe.value).observe(time.perf_counter() - began)
    return [Candle(*r, timeframe=timeframe) for r in rows]


async def read_candles_json(
    conn: Connection, instrument_id: int, timeframe: Timeframe, start: datetime, end: datetime
) -> str:
    """:func:`read_candles` as a JSON array text of wire candles (``[Candle.wire(), ...]``)."""
    began = time.perf_counter()
    text: str = await conn.fetchval(READ_JSON, instrument_id, timeframe.value, start, end)
    READ_SECONDS.labels(timeframe.value).observe(time.perf_counter() - began)
    return text
