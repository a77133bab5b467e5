"""The reconciliation job of one IST trading day: for each subscribed instrument, the broker's 1m
candles of the day's sessions fetched (one after another, through the adapter's own rate limiter:
Kite's 3 historical requests a second are shared by the process), compared with the live ones
(:mod:`~trading_helper.reconcile.compare`), the differences and a per-instrument line stored
(migration 0014), and the broker's candles kept in ``broker_candles`` so a read can prefer them
(``prefer=broker``). The run's row in ``reconcile_runs`` is its progress; running a day again
replaces its results.

An instrument whose fetch fails is recorded with the error and the run goes on; an expired login
stops the run (every other instrument would fail the same way) and is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from trading_helper.brokers.base import Broker
from trading_helper.candles.backfill import our_bucket, store_broker_candles
from trading_helper.candles.calendar import SessionLoader
from trading_helper.errors import BrokerError, LoginRequired
from trading_helper.models import Candle
from trading_helper.reconcile.compare import Comparison, compare
from trading_helper.redact import redact
from trading_helper.storage import sql_reconcile
from trading_helper.storage.db import db_errors
from trading_helper.timeframes import Timeframe

log = logging.getLogger(__name__)

M1 = Timeframe.M1


@dataclass(frozen=True, slots=True)
class RunSummary:
    day: date
    broker: str
    instruments: int
    failed: int
    differences: int


async def _broker_candles(
    broker: Broker, token: str, sessions: list[tuple[datetime, datetime]]
) -> dict[datetime, Candle]:
    out: dict[datetime, Candle] = {}
    for lo, hi in sessions:
        for c in await broker.fetch_history(token, M1, lo, hi):
            bucket = our_bucket(M1, c.bucket)
            if lo <= bucket < hi:
                out[bucket] = Candle(
                    bucket, c.open, c.high, c.low, c.close, c.volume, c.open_interest, "broker", timeframe=M1
                )
    return out


async def _live(
    pool: asyncpg.Pool, instrument_id: int, sessions: list[tuple[datetime, datetime]]
) -> tuple[list[Candle], list[tuple[datetime, datetime]]]:
    candles: list[Candle] = []
    captured: list[tuple[datetime, datetime]] = []
    async with pool.acquire() as conn:
        for lo, hi in sessions:
            # bucket, open, high, low, close, volume, open_interest: Candle's own order
            rows = await conn.fetch(sql_reconcile.LIVE_1M, instrument_id, lo, hi)
            candles += [Candle(*r, timeframe=M1) for r in rows]
            captured += [
                (r["lo"], r["hi"]) for r in await conn.fetch(sql_reconcile.CAPTURED, instrument_id, lo, hi)
            ]
    return candles, captured


async def _store(
    pool: asyncpg.Pool,
    day: date,
    broker: str,
    instrument_id: int,
    fetched: dict[datetime, Candle],
    live: int,
    result: Comparison | None,
    error: str | None,
) -> int:
    diffs = result.differences if result is not None else []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(sql_reconcile.CLEAR_DIFFERENCES, day, instrument_id)
        if diffs:
            await conn.execute(
                sql_reconcile.STORE_DIFFERENCES,
                day,
                instrument_id,
                [d.bucket for d in diffs],
                [d.kind for d in diffs],
                [d.live for d in diffs],
                [d.broker for d in diffs],
            )
        await store_broker_candles(conn, instrument_id, M1, fetched, broker)
        await conn.execute(
            sql_reconcile.STORE_INSTRUMENT,
            day,
            instrument_id,
            broker,
            result.compared if result else 0,
            live,
            len(fetched),
            result.uncovered if result else 0,
            len(diffs),
            error,
        )
        await conn.execute(sql_reconcile.PROGRESS, day, broker, error is not None, len(diffs))
    return len(diffs)


async def reconcile_day(
    pool: asyncpg.Pool,
    broker: Broker,
    day: date,
    *,
    sessions: SessionLoader | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RunSummary:
    """Reconcile ``day`` (IST) for every subscribed instrument the broker has a token for;
    ``progress(done, total)`` after each instrument."""
    loader = sessions or SessionLoader()
    with db_errors("starting a reconciliation"):
        rows = await pool.fetch(sql_reconcile.SUBSCRIBED, broker.name)
        for calendar in {r["calendar"] for r in rows}:
            await loader.ensure(pool, calendar, [day.year])
        await pool.execute(sql_reconcile.START_RUN, day, broker.name, len(rows))
    failed = differences = 0
    for done, row in enumerate(rows, start=1):
        iid = row["instrument_id"]
        with db_errors("reading the day's sessions"):
            windows = [
                (r["lo"], r["hi"]) for r in await pool.fetch(sql_reconcile.DAY_SESSIONS, row["calendar"], day)
            ]
        fetched: dict[datetime, Candle] = {}
        error: str | None = None
        try:
            fetched = await _broker_candles(broker, row["broker_token"], windows)
        except LoginRequired:
            raise
        except BrokerError as exc:
            error = redact(exc.message)
            log.warning("reconcile %s: instrument %d: %s", day, iid, error)
        with db_errors("storing a reconciliation"):
            live, captured = await _live(pool, iid, windows) if error is None else ([], [])
            result = compare(live, list(fetched.values()), captured) if error is None else None
            differences += await _store(pool, day, broker.name, iid, fetched, len(live), result, error)
        failed += error is not None
        if progress is not None:
            progress(done, len(rows))
    with db_errors("finishing a reconciliation"):
        await pool.execute(sql_reconcile.FINISH_RUN, day, broker.name)
    return RunSummary(day, broker.name, len(rows), failed, differences)
