"""The one read path: ``read_candles`` in SQL (live where fully captured, else broker, else the
partial live candle), used by the API, the dashboards and the chart page alike."""

from __future__ import annotations

import time
from datetime import datetime

import asyncpg

from trading_helper.candles.metrics import READ_SECONDS
from trading_helper.models import Candle
from trading_helper.timeframes import Timeframe

READ = (
    "SELECT bucket, open, high, low, close, volume, open_interest, source "
    "FROM read_candles($1, $2, $3, $4)"
)


async def read_candles(
    conn: asyncpg.Connection, instrument_id: int, timeframe: Timeframe, start: datetime, end: datetime
) -> list[Candle]:
    """Buckets starting in [start, end), in time order, one per bucket."""
    began = time.perf_counter()
    rows = await conn.fetch(READ, instrument_id, timeframe.value, start, end)
    READ_SECONDS.labels(timeframe.value).observe(time.perf_counter() - began)
    return [Candle(*r) for r in rows]
