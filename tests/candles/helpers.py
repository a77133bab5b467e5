"""Builders for candle tests: ticks and live coverage at fixed past dates, straight into SQL."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import asyncpg

from tests.storage.helpers import refresh_all
from trading_helper.timeframes import IST


def ist(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=IST)


async def add_ticks(
    pool: asyncpg.Pool, instrument_id: int, stamps: Iterable[datetime], price: float = 100.0
) -> None:
    """One tick per stamp (price rising by 0.05 each, 10 traded each), then the candle rollup."""
    stamps = sorted(stamps)
    if not stamps:
        return
    await pool.execute("SELECT ensure_tick_partitions($1, $2)", stamps[0], stamps[-1])
    rows = [(ts, instrument_id, price + 0.05 * n, 10, ts) for n, ts in enumerate(stamps)]
    await pool.executemany(
        "INSERT INTO tick_data (time, instrument_id, ltp, volume_delta, received_at) VALUES ($1, $2, $3, $4, $5)",
        rows,
    )
    await refresh_all(pool)


async def add_coverage(pool: asyncpg.Pool, instrument_id: int, start: datetime, end: datetime) -> None:
    await pool.execute(
        "INSERT INTO live_coverage (instrument_id, broker, period, open) VALUES ($1, 'kite', tstzrange($2, $3), false)",
        instrument_id,
        start,
        end,
    )


def minutes(start: datetime, end: datetime, step: int = 1) -> list[datetime]:
    out, t = [], start
    while t < end:
        out.append(t)
        t += timedelta(minutes=step)
    return out
