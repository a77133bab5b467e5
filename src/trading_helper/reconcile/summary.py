"""What a day's reconciliation found, as JSON (``GET /api/reconcile``, ``trading-helper reconcile``):
its runs with their progress, a line per instrument with its differences counted by kind, and,
when asked, the differences themselves. Times in IST."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

import asyncpg

from trading_helper.storage import sql_reconcile
from trading_helper.timeframes import IST

MAX_DIFFERENCES = 10_000


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(IST).isoformat()


async def day_summary(
    pool: asyncpg.Pool, day: date, *, differences: bool = False, instrument_id: int | None = None
) -> dict[str, Any]:
    """The summary of ``day``; ``differences``: with up to :data:`MAX_DIFFERENCES` of them (of one
    instrument when ``instrument_id`` is given)."""
    async with pool.acquire() as conn:
        runs = await conn.fetch(sql_reconcile.RUNS, day)
        lines = await conn.fetch(sql_reconcile.INSTRUMENTS, day)
        diffs = (
            await conn.fetch(sql_reconcile.DIFFERENCES, day, instrument_id, MAX_DIFFERENCES)
            if differences
            else []
        )
    out: dict[str, Any] = {
        "date": day.isoformat(),
        "runs": [
            {
                "broker": r["broker"],
                "started_at": _time(r["started_at"]),
                "finished_at": _time(r["finished_at"]),
                "instruments": r["instruments"],
                "done": r["done"],
                "failed": r["failed"],
                "differences": r["differences"],
            }
            for r in runs
        ],
        "instruments": [
            {
                "instrument_id": r["instrument_id"],
                "instrument": f"{r['exchange']}:{r['tradingsymbol']}",
                "broker": r["broker"],
                "compared": r["compared"],
                "live_candles": r["live_candles"],
                "broker_candles": r["broker_candles"],
                "uncovered": r["uncovered"],
                "differences": r["differences"],
                "kinds": json.loads(r["kinds"]),
                "error": r["error"],
            }
            for r in lines
        ],
    }
    if differences:
        out["differences"] = [
            {
                "instrument_id": d["instrument_id"],
                "time": _time(d["bucket"]),
                "kind": d["kind"],
                "live": d["live"],
                "broker": d["broker"],
            }
            for d in diffs
        ]
    return out
