"""The stored updates of some instruments over a time range, as one stream in exchange-time order,
with a marker at the start of every hole in their live coverage.

Memory stays bounded whatever the range: rows are read one window at a time (its width adapts to
the density of the data, an empty stretch is skipped in one query), each query is short (no
transaction stays open while a replay plays at 1x), and the windows are merged through a small
heap. The merge is exact because a row's exchange time is never earlier than the time it is
selected by (see ``storage/sql_replay.py``): once the window ending at ``t`` is read, every row
played before ``t`` is known.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from trading_helper.candles.calendar import SessionLoader, years_between
from trading_helper.errors import InvalidRange
from trading_helper.models import Tick
from trading_helper.storage import sql_replay
from trading_helper.storage.db import db_errors

#: the first window; it doubles while windows come back sparse and halves when they are dense
FIRST_WINDOW = timedelta(minutes=1)
MAX_WINDOW = timedelta(days=1)
#: rows a window aims at (one window's rows are in memory at a time)
WINDOW_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class Hole:
    """Capture was down: [start, end) of a trading session has no live coverage for the instrument."""

    instrument_id: int
    start: datetime
    end: datetime


def row_tick(row: asyncpg.Record) -> Tick:
    """A stored row as the :class:`Tick` the live feed carried (its trade time, when it is a trade
    or the feed named the trade it repeats)."""
    return Tick(
        instrument_id=row["instrument_id"],
        exchange_ts=row["exchange_time"],
        received_ts=row["received_at"],
        last_price=row["ltp"],
        last_quantity=row["last_qty"],
        volume=row["volume"],
        average_price=row["avg_price"],
        open_interest=row["open_interest"],
        bid_price=row["bid_price"],
        bid_quantity=row["bid_qty"],
        ask_price=row["ask_price"],
        ask_quantity=row["ask_qty"],
        trade_ts=row["trade_time"],
    )


async def holes(
    pool: asyncpg.Pool, instrument_ids: Sequence[int], start: datetime, end: datetime, sessions: SessionLoader
) -> list[Hole]:
    """The coverage holes of the instruments in [start, end), in time order."""
    with db_errors("reading live coverage"):
        for key in await pool.fetch(sql_replay.CALENDARS, list(instrument_ids)):
            await sessions.ensure(pool, key["calendar"], years_between(start, end))
        rows = await pool.fetch(sql_replay.HOLES, list(instrument_ids), start, end)
    return [Hole(r["instrument_id"], r["lo"], r["hi"]) for r in rows]


async def replay_events(
    pool: asyncpg.Pool,
    instrument_ids: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    sessions: SessionLoader | None = None,
    window_rows: int = WINDOW_ROWS,
) -> AsyncIterator[tuple[datetime, Tick | Hole]]:
    """``(exchange time, update or hole)`` in exchange-time order: the trades whose trade time and
    the quote updates whose exchange time lies in [start, end), and the holes starting there.
    Ties go by instrument, a hole before the updates of its instant."""
    if start >= end:
        raise InvalidRange(f"from ({start.isoformat()}) must be before to ({end.isoformat()})")
    ids = sorted(set(instrument_ids))
    seq = itertools.count()
    # (time, 0 for a hole / 1 for an update, instrument, sequence, item); the sequence keeps SQL order
    heap: list[tuple[datetime, int, int, int, Tick | Hole]] = [
        (h.start, 0, h.instrument_id, next(seq), h)
        for h in await holes(pool, ids, start, end, sessions or SessionLoader())
    ]
    heapq.heapify(heap)
    cursor, width = start, FIRST_WINDOW
    while cursor < end:
        upper = min(cursor + width, end)
        with db_errors("reading stored ticks"):
            rows = await pool.fetch(sql_replay.WINDOW, ids, cursor, upper)
            following = None if rows else await pool.fetchval(sql_replay.NEXT_TIME, ids, upper, end)
        for r in rows:
            heapq.heappush(heap, (r["at"], 1, r["instrument_id"], next(seq), row_tick(r)))
        if len(rows) > window_rows:
            width = max(width / 2, timedelta(seconds=1))
        elif len(rows) < window_rows // 4:
            width = min(width * 2, MAX_WINDOW)
        if rows:
            cursor = upper
        else:  # skip the empty stretch: to the next stored row, or the end
            cursor = end if following is None else following
        while heap and heap[0][0] < cursor:
            at, *_, item = heapq.heappop(heap)
            yield at, item
    while heap:
        at, *_, item = heapq.heappop(heap)
        yield at, item
