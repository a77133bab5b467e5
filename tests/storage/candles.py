"""Test reads of the candle relations (live candles only; the product's read path, merged with
broker history, is :mod:`trading_helper.candles.read`)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from trading_helper.errors import InvalidRange
from trading_helper.models import Candle
from trading_helper.storage import queries
from trading_helper.timeframes import Timeframe, parse_timeframe

_CANDLE_COLUMNS = "bucket, open, high, low, close, volume, open_interest, tick_count"


def _candles_sql(relation: str) -> str:
    return (
        f"SELECT {_CANDLE_COLUMNS} FROM {relation} "
        "WHERE instrument_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket"
    )


#: timeframe -> the statement reading its candle relation (the whitelist)
CANDLES_BY_TIMEFRAME: dict[Timeframe, str] = {tf: _candles_sql(tf.relation) for tf in Timeframe}


async def read_live_candles(
    conn: asyncpg.Connection, instrument_id: int, timeframe: str | Timeframe, start: datetime, end: datetime
) -> list[Candle]:
    """Candles with ``start <= bucket < end``; the timeframe is whitelisted, never interpolated."""
    tf = parse_timeframe(timeframe)
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidRange("from and to must be timezone-aware")
    if start >= end:
        raise InvalidRange(f"from ({start.isoformat()}) must be before to ({end.isoformat()})")
    rows = await conn.fetch(CANDLES_BY_TIMEFRAME[tf], instrument_id, start, end)
    return [
        Candle(
            bucket=r["bucket"],
            open=r["open"],
            high=r["high"],
            low=r["low"],
            close=r["close"],
            volume=r["volume"],
            open_interest=r["open_interest"],
            source="live",
            timeframe=tf,
        )
        for r in rows
    ]


async def refresh_candles(conn: asyncpg.Connection) -> None:
    """Roll up new ticks (plain PostgreSQL; a no-op on TimescaleDB, whose policies do it)."""
    await conn.execute(queries.REFRESH_CANDLES)
