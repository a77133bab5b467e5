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

#: the same series as one JSON array, built by the database: the API's answer for a day of 1m is
#: ~375 candles, and formatting them here costs more than reading them (times in IST, +05:30)
READ_JSON = """
SELECT coalesce(json_agg(json_build_object(
           'time', to_char(bucket AT TIME ZONE 'Asia/Kolkata', 'YYYY-MM-DD"T"HH24:MI:SS') || '+05:30',
           'open', open, 'high', high, 'low', low, 'close', close, 'volume', volume,
           'open_interest', open_interest, 'source', source) ORDER BY bucket), '[]')::text
FROM read_candles($1, $2, $3, $4)
"""


async def read_candles(
    conn: asyncpg.Connection, instrument_id: int, timeframe: Timeframe, start: datetime, end: datetime
) -> list[Candle]:
    """Buckets starting in [start, end), in time order, one per bucket."""
    began = time.perf_counter()
    rows = await conn.fetch(READ, instrument_id, timeframe.value, start, end)
    READ_SECONDS.labels(timeframe.value).observe(time.perf_counter() - began)
    return [Candle(*r) for r in rows]


async def read_candles_json(
    conn: asyncpg.Connection, instrument_id: int, timeframe: Timeframe, start: datetime, end: datetime
) -> str:
    """:func:`read_candles` as a JSON array text: ``[{"time", "open", ..., "source"}, ...]``."""
    began = time.perf_counter()
    text: str = await conn.fetchval(READ_JSON, instrument_id, timeframe.value, start, end)
    READ_SECONDS.labels(timeframe.value).observe(time.perf_counter() - began)
    return text
