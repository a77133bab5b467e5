"""The one read path: ``read_candles`` in SQL (live where fully captured, else broker, else the
partial live candle), used by the API, the dashboards and the chart page alike. ``prefer="broker"``
takes the broker's candle wherever one is stored (a reader's choice: ``functools.partial`` keeps
the :data:`Reader` shape)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Literal, TypeVar

from trading_helper.candles.metrics import READ_SECONDS
from trading_helper.models import Candle
from trading_helper.storage import sql_candles
from trading_helper.storage.db import Connection
from trading_helper.timeframes import Timeframe

T = TypeVar("T")
#: which source a read prefers where both have a candle (``live``: the default, as before 0017)
Prefer = Literal["live", "broker"]

#: a reader of one instrument's series: ``read_candles`` (models) or ``read_candles_json`` (wire text)
Reader = Callable[[Connection, int, Timeframe, datetime, datetime], Awaitable[T]]


def _args(prefer: Prefer, plain: str, preferring: str) -> tuple[str, tuple[str, ...]]:
    return (plain, ()) if prefer == "live" else (preferring, (prefer,))


async def read_candles(
    conn: Connection,
    instrument_id: int,
    timeframe: Timeframe,
    start: datetime,
    end: datetime,
    prefer: Prefer = "live",
) -> list[Candle]:
    """Buckets starting in [start, end), in time order, one per bucket."""
    began = time.perf_counter()
    sql, extra = _args(prefer, sql_candles.READ, sql_candles.READ_PREFER)
    rows = await conn.fetch(sql, instrument_id, timeframe.value, start, end, *extra)
    READ_SECONDS.labels(timeframe.value).observe(time.perf_counter() - began)
    return [Candle(*r, timeframe=timeframe) for r in rows]


async def read_candles_json(
    conn: Connection,
    instrument_id: int,
    timeframe: Timeframe,
    start: datetime,
    end: datetime,
    prefer: Prefer = "live",
) -> str:
    """:func:`read_candles` as a JSON array text of wire candles (``[Candle.wire(), ...]``)."""
    began = time.perf_counter()
    sql, extra = _args(prefer, sql_candles.READ_JSON, sql_candles.READ_JSON_PREFER)
    text: str = await conn.fetchval(sql, instrument_id, timeframe.value, start, end, *extra)
    READ_SECONDS.labels(timeframe.value).observe(time.perf_counter() - began)
    return text
