"""One replay as the messages of the live WebSocket (``api/ws.py``): for each stored update its
``tick`` message and the ``candle`` messages of the chosen intervals it moves (built by the same
:func:`~trading_helper.api.hub.tick_messages` as live), paced, and besides them::

    {"type": "hole", "instrument_id": 7, "from": "...+05:30", "to": "...+05:30"}   capture was down
    {"type": "replay_end", "ticks": 1234, "holes": 2}                              nothing more follows

Times of the markers are IST, like candle times.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import asyncpg

from trading_helper.api.forming import FormingCandles
from trading_helper.api.hub import tick_messages
from trading_helper.candles.calendar import SessionLoader
from trading_helper.replay.pace import Pacer
from trading_helper.replay.source import Hole, replay_events
from trading_helper.timeframes import IST, Timeframe


def hole_message(hole: Hole) -> str:
    return json.dumps(
        {
            "type": "hole",
            "instrument_id": hole.instrument_id,
            "from": hole.start.astimezone(IST).isoformat(),
            "to": hole.end.astimezone(IST).isoformat(),
        }
    )


async def replay_messages(
    pool: asyncpg.Pool,
    instrument_ids: Sequence[int],
    intervals: set[Timeframe],
    start: datetime,
    end: datetime,
    speed: float | None,
    *,
    sessions: SessionLoader | None = None,
) -> AsyncIterator[tuple[datetime | None, list[str]]]:
    """``(exchange time, messages)`` of each update (or hole), each when it is due at ``speed``
    (None: at once), then ``(None, [the replay_end message])``."""
    forming = FormingCandles()
    pacer = Pacer(speed)
    ticks = holes = 0
    async for at, item in replay_events(pool, instrument_ids, start, end, sessions=sessions):
        await pacer.wait(at)
        if isinstance(item, Hole):
            holes += 1
            yield at, [hole_message(item)]
        else:
            ticks += 1
            text, candles = tick_messages(forming, item, intervals)
            yield at, [text, *(candles[tf] for tf in sorted(intervals) if tf in candles)]
    yield None, [json.dumps({"type": "replay_end", "ticks": ticks, "holes": holes})]
