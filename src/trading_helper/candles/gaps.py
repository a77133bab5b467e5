"""Gaps: the bucket ranges of a request that are neither captured live nor fetched yet.

The arithmetic is the SQL function ``candle_gaps`` (multiranges: window ∩ sessions − live
coverage, widened to whole buckets, − fetch coverage). Here: calling it, and grouping the gaps
into as few broker requests as is reasonable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from trading_helper.storage import sql_candles
from trading_helper.storage.db import Connection
from trading_helper.timeframes import Timeframe


@dataclass(frozen=True, slots=True)
class Gap:
    start: datetime
    end: datetime


async def find_gaps(
    conn: Connection,
    instrument_id: int,
    timeframe: Timeframe,
    start: datetime,
    end: datetime,
    until: datetime,
) -> list[Gap]:
    """Gaps of buckets starting in [start, end) and ending by ``until``, in time order."""
    rows = await conn.fetch(sql_candles.GAPS, instrument_id, timeframe.value, start, end, until)
    return [Gap(r["lo"], r["hi"]) for r in rows]


def fetch_windows(gaps: list[Gap], timeframe: Timeframe) -> list[Gap]:
    """Consecutive gaps merged while the merged window stays within the timeframe's ``merge_span``."""
    span = timeframe.facts.merge_span
    out: list[Gap] = []
    for gap in gaps:
        if out and gap.end - out[-1].start <= span:
            out[-1] = Gap(out[-1].start, gap.end)
        else:
            out.append(gap)
    return out
