"""Splitting a historical-candle request the way every broker needs: one checked range, cut into
pieces no longer than the broker's per-request span."""

from __future__ import annotations

from datetime import datetime, timedelta

from trading_helper.errors import InvalidRange


def history_chunks(start: datetime, end: datetime, span: timedelta) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive pieces no longer than ``span``; the range must be aware
    and non-empty (InvalidRange otherwise)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidRange("history range must be timezone-aware")
    if start >= end:
        raise InvalidRange(f"history range is empty: {start.isoformat()} >= {end.isoformat()}")
    chunks = []
    cursor = start
    while cursor < end:
        stop = min(cursor + span, end)
        chunks.append((cursor, stop))
        cursor = stop
    return chunks
