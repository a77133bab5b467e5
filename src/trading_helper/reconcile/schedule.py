"""Reconciliation after each session, run by ``serve`` as the supervised task ``reconcile``: once
the day's last NSE session has been over for ``RECONCILE_AFTER_MINUTES`` (the brokers publish the
day's 1m history after the close), the day is reconciled unless it already was; then the task
sleeps until the next session's end (an hour at most, so a calendar reload or a clock jump is
noticed)."""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime, timedelta

import asyncpg

from trading_helper import clock
from trading_helper.brokers.base import Broker
from trading_helper.candles.calendar import SessionLoader, years_between
from trading_helper.reconcile.job import reconcile_day
from trading_helper.storage import sql_reconcile
from trading_helper.storage.db import db_errors

log = logging.getLogger(__name__)

MAX_SLEEP = timedelta(hours=1)


async def due_day(pool: asyncpg.Pool, broker: str, ended_by: datetime) -> date | None:
    """The latest trading day whose sessions ended by ``ended_by`` and that ``broker`` has not
    reconciled yet (None: nothing due)."""
    with db_errors("finding the day to reconcile"):
        day: date | None = await pool.fetchval(sql_reconcile.DUE_DAY, broker, ended_by)
    return day


async def reconcile_after_sessions(
    pool: asyncpg.Pool, broker: Broker, after: timedelta, sessions: SessionLoader | None = None
) -> None:
    """Forever (a supervised task): reconcile each day ``after`` its last session ended."""
    loader = sessions or SessionLoader()
    while True:
        now = clock.now()
        with db_errors("loading the exchange calendar"):
            await loader.ensure(pool, "NSE", years_between(now - timedelta(days=7), now + MAX_SLEEP))
        day = await due_day(pool, broker.name, now - after)
        if day is not None:
            summary = await reconcile_day(pool, broker, day, sessions=loader)
            log.info(
                "reconciled %s with %s: %d instruments, %d differences, %d failed",
                day,
                broker.name,
                summary.instruments,
                summary.differences,
                summary.failed,
            )
            continue
        with db_errors("finding the next session"):
            end: datetime | None = await pool.fetchval(sql_reconcile.NEXT_SESSION_END, now - after)
        wait = MAX_SLEEP if end is None else min(MAX_SLEEP, end + after - now)
        await asyncio.sleep(max(wait.total_seconds(), 1.0))
