"""The one read path: ``read_candles`` in SQL (live where fully captured, else broker, else the
partial live candle), used by the API, the dashboards and the chart page alike."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from trading_helper.candles.metrics import READ_SECONDS
from trading_helper.models import Candle
from trading_helper.storage import sql_candles
from trading_helper.storage.db import Connection
from trading_helper.timeframes import Timeframe

T = TypeVar("T")

#: a reader of one instrument's series: ``read_candles`` (models) or ``read_candles_json`` (wire text)
Reader = Callable[[Connection, int, Timeframe, datetime, datetime], Awaitable[T]]


async def read_candles(
    conn: Connection, instrument_id: int, timeframe: Timeframe, start: datetime, end: datetime
) -> list[Candle]:
    """Buckets starting in [start, end), in time order, one per bucket."""
    began = time.perf_counter()
    rows = await conn.fetch(sql_candles.READ, instrument_id, timeframe.value, start, end)
    READ_SECONDS.labels(timeframe.value).observe(time.perf_counter() - began)
    return [Candle(*r, timeframe=timeframe) for r in rows]


async def read_candles_json(
    conn: Connection, instrument_id: int, timeframe: Timeframe, start: datetime, end: datetime
) -> str:
    """:func:`read_candles` as a JSON array text of wire candles (``[Candle.wire(), ...]``)."""
    began = time.perf_counter()
    text: str = await conn.fetchval(sql_candles.READ_JSON, instrument_id, timeframe.value, start, end)
    READ_SECONDS.labels(timeframe.value).observe(time.perf_counter() - began)
    return text
