"""The service's maintenance loop: candle rollup and retention (plain PostgreSQL), job health
(both flavours), late-data catch-up and the fallback refresh (TimescaleDB).

One task of the ingest service. It never ends by itself: a failed step is logged, recorded and
retried on its next turn.

* plain PostgreSQL: ``refresh_candles()`` every ``REFRESH_INTERVAL_S`` and ``apply_retention()``
  every hour, each run recorded in ``maintenance_runs`` (success, or failure with its error);
* every ``JOB_CHECK_INTERVAL_S``: :class:`~trading_helper.storage.jobs.JobHealth` reads
  ``job_status``; on TimescaleDB the levels are then brought up to date lowest first
  (:func:`~trading_helper.storage.catchup.catch_up`): what is invalidated below a watermark (late
  ticks after a drained backlog or a restart) always, and, unless ``JOB_FALLBACK_REFRESH`` is
  off, the whole due window of every level whose policy failed or whose scheduler is down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from trading_helper import clock
from trading_helper.config import Settings
from trading_helper.errors import TradingHelperError
from trading_helper.storage import queries
from trading_helper.storage.catchup import CatchUpReport, catch_up
from trading_helper.storage.jobs import JobHealth, clean_error, record_run
from trading_helper.storage.sqlstate import DB_FAILURES

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 3600.0
#: the writers' volume log is folded into tick_volume_state this often (storage/queries.py)
FOLD_EVERY_S = 5.0
#: a failed step is logged and recorded with the original error's own name and text
_DB_ERRORS: tuple[type[BaseException], ...] = (*DB_FAILURES, TradingHelperError)
#: and a full disk under the archive's files
_HOURLY_ERRORS: tuple[type[BaseException], ...] = (*_DB_ERRORS, OSError)


#: a job of a layer above storage run hourly (the F&O archive's ``export.archive.FoArchive.run``)
HourlyJob = tuple[str, Callable[[], Awaitable[object]]]


class Maintenance:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, flavour: str, hourly: tuple[HourlyJob, ...] = ()
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.flavour = flavour
        self.hourly = hourly
        self.health = JobHealth(flavour)
        self.last_refresh_at: datetime | None = None
        self.last_catch_up: CatchUpReport | None = None
        #: instrument states folded from the volume log into tick_volume_state
        self.folded = 0
        self._fold_failing = False
        # all due at start
        self._last = {
            "refresh": -math.inf,
            "retention": -math.inf,
            "check": -math.inf,
            "hourly": -math.inf,
            "fold": -math.inf,
        }

    async def run(self) -> None:
        await self.resume()
        while True:
            await self.step()
            await asyncio.sleep(1.0)

    async def resume(self, now: float | None = None) -> None:
        """Go on with the hourly schedules where the last owner left them: retention and the
        hourly jobs that succeeded within the hour are not run again at once. A takeover of the
        maintenance (its writer was killed) ran them all at its start, and the F&O archive reads
        the day's ticks while the taker's streams caught up. Unknown (no record, or the database
        away): due now, as before."""
        names = ["apply_retention", *(name for name, _ in self.hourly)]
        try:
            async with self.pool.acquire() as conn:
                ago = {r["job"]: r["ago"] for r in await conn.fetch(queries.SINCE_LAST_SUCCESS, names)}
        except _DB_ERRORS:
            return
        now = time.monotonic() if now is None else now
        if "apply_retention" in ago:
            self._last["retention"] = now - ago["apply_retention"]
        if self.hourly and all(name in ago for name, _ in self.hourly):
            self._last["hourly"] = now - max(ago[name] for name, _ in self.hourly)

    async def step(self, now: float | None = None) -> None:
        """One turn: whatever is due at ``now`` (monotonic seconds)."""
        now = time.monotonic() if now is None else now
        if self.flavour == "postgres":
            if now - self._last["refresh"] >= self.settings.REFRESH_INTERVAL_S:
                self._last["refresh"] = now
                if await self._recorded(
                    "refresh_candles",
                    "refresh",
                    "candles",
                    self.settings.REFRESH_INTERVAL_S,
                    queries.REFRESH_CANDLES,
                ):
                    self.last_refresh_at = clock.now()
            if now - self._last["retention"] >= RETENTION_EVERY_S:
                self._last["retention"] = now
                await self._recorded(
                    "apply_retention", "retention", "tick_data", RETENTION_EVERY_S, queries.APPLY_RETENTION
                )
        if now - self._last["fold"] >= FOLD_EVERY_S:
            self._last["fold"] = now
            await self.fold_volume_log()
        if self.hourly and now - self._last["hourly"] >= RETENTION_EVERY_S:
            self._last["hourly"] = now
            for name, job in self.hourly:
                await self._run_hourly(name, job)
        if now - self._last["check"] >= self.settings.JOB_CHECK_INTERVAL_S:
            self._last["check"] = now
            await self.check()

    async def fold_volume_log(self) -> None:
        """The volume log into tick_volume_state. A failure is logged and tried again at the next
        turn: nothing is lost meanwhile (the state is the table merged with the log), the log
        only grows."""
        try:
            async with self.pool.acquire() as conn:
                (row,) = await conn.fetch(queries.FOLD_VOLUME_LOG)
            self.folded += row["folded"]
            self._fold_failing = False
        except _DB_ERRORS as exc:
            if not self._fold_failing:
                log.error(
                    "folding the volume log failed (tried again in %.0f s): %s",
                    FOLD_EVERY_S,
                    clean_error(str(exc)),
                )
            self._fold_failing = True

    async def check(self) -> None:
        """Judge the jobs; on TimescaleDB catch the candle levels up (and fall back) as needed."""
        try:
            async with self.pool.acquire() as conn:
                await self.health.check(conn)
        except _DB_ERRORS as exc:
            self.health.check_failed(exc)
            log.warning("job health check deferred: %s", clean_error(str(exc)))
            return
        if self.flavour != "timescale":
            return
        # job runs are stamped on the real clock, as the database stamps its jobs (now()), never
        # on the data clock (trading_helper.clock), which a replay may run fast
        failing = self.health.failing_relations()
        fallback: set[str] | None = set() if not self.settings.JOB_FALLBACK_REFRESH else failing
        started = datetime.now(UTC)
        try:
            async with self.pool.acquire() as conn:
                report = await catch_up(conn, self.flavour, fallback=fallback)
        except _DB_ERRORS as exc:
            log.error("candle catch-up failed: %s", clean_error(str(exc)))
            await self._record_quietly("candle catch-up", str(exc), started)
            return
        self.last_catch_up = report
        # recorded on every turn, so a catch-up that keeps failing shows in job_status like a policy
        await self._record_quietly("candle catch-up", None, started)
        if report.refreshed:
            self.last_refresh_at = clock.now()
            why = (
                "their refresh policies are not running"
                if fallback is None or fallback
                else "late data below the watermarks"
            )
            log.warning("refreshed candle levels here because %s: %s", why, report.describe())

    async def _run_hourly(self, name: str, job: Callable[[], Awaitable[object]]) -> None:
        started = datetime.now(UTC)
        error: str | None = None
        try:
            await job()
        except _HOURLY_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error("%s failed: %s", name, clean_error(error))
        await self._record_quietly(
            name, error, started, kind="retention", relation="archive", schedule_s=RETENTION_EVERY_S
        )

    async def _recorded(self, job: str, kind: str, relation: str, schedule_s: float, sql: str) -> bool:
        started = datetime.now(UTC)
        error: str | None = None
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(sql)
        except _DB_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error("%s failed: %s", job, clean_error(error))
        await self._record_quietly(job, error, started, kind=kind, relation=relation, schedule_s=schedule_s)
        return error is None

    async def _record_quietly(
        self,
        job: str,
        error: str | None,
        started: datetime,
        *,
        kind: str = "refresh",
        relation: str | None = "candles",
        schedule_s: float | None = None,
    ) -> None:
        try:
            async with self.pool.acquire() as conn:
                await record_run(
                    conn,
                    job,
                    kind,
                    relation,
                    schedule_s or self.settings.JOB_CHECK_INTERVAL_S,
                    started,
                    error,
                )
        except _DB_ERRORS as exc:  # the database is away: the next check reports it
            log.debug("could not record the run of %s: %s", job, exc)

    def status(self) -> dict[str, Any]:
        out = self.health.status()
        out["fallback_refresh"] = self.settings.JOB_FALLBACK_REFRESH
        if self.last_catch_up is not None and self.last_catch_up.refreshed:
            out["last_catch_up"] = self.last_catch_up.describe()
        return out
