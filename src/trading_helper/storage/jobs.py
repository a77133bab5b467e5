"""Job health: the maintenance that keeps candles and retention going, watched.

On TimescaleDB the candle refresh, compression and retention are policy jobs run by TimescaleDB's
own scheduler; a background run can fail for reasons outside our code (a TimescaleDB/PostgreSQL
minor-release clash was seen failing every run) and failed runs back off, so nothing would notice.
On plain PostgreSQL the service runs the rollup and retention itself and records each run
(:func:`record_run`). Both are read through the ``job_status`` view (migration 7, the same columns
on both flavours) and judged by one pure rule (:func:`evaluate`):

* the job's last run failed, or
* it has not succeeded within twice its schedule interval (counted from when this process first
  saw it, for a job that never succeeded), or
* it is not scheduled (paused), or
* TimescaleDB: no job scheduler runs for this database at all.

:class:`JobHealth` runs the check, logs each new problem once with the error text, counts it in
Prometheus and keeps the answer for ``/health`` and ``/api/status`` (:meth:`JobHealth.status`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import Counter, Gauge

from trading_helper.storage import queries
from trading_helper.storage.db import Row, Statements

log = logging.getLogger(__name__)

Problem = Literal["failed", "overdue", "paused", "scheduler_down"]

JOB_PROBLEMS = Gauge("th_job_problem", "1 while a maintenance job has a problem", ["job", "problem"])
JOB_FAILED_RUNS = Counter("th_job_failed_runs_total", "Failed runs of maintenance jobs, as recorded", ["job"])
JOB_CHECKS_FAILED = Counter("th_job_checks_failed_total", "Job health checks that could not read the jobs")

#: longest error text kept from a job (the scheduler stores whatever the failing statement said)
ERROR_MAX_CHARS = 500


@dataclass(frozen=True, slots=True)
class JobState:
    """One row of ``job_status``; times as epoch seconds (None: never)."""

    job: str
    job_id: int | None
    kind: str
    relation: str | None
    schedule_s: float
    scheduled: bool
    last_start: float | None
    last_success: float | None
    last_run_failed: bool
    last_error: str | None
    last_error_at: float | None
    total_runs: int
    total_failures: int

    @classmethod
    def from_row(cls, row: Row) -> JobState:
        return cls(
            job=row["job"],
            job_id=row["job_id"],
            kind=row["kind"],
            relation=row["relation"],
            schedule_s=float(row["schedule_s"]),
            scheduled=bool(row["scheduled"]),
            last_start=row["last_start"],
            last_success=row["last_success"],
            last_run_failed=bool(row["last_run_failed"]),
            last_error=row["last_error"],
            last_error_at=row["last_error_at"],
            total_runs=int(row["total_runs"]),
            total_failures=int(row["total_failures"]),
        )


@dataclass(frozen=True, slots=True)
class JobProblem:
    job: str
    problem: Problem
    relation: str | None
    detail: str
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "problem": self.problem,
            "relation": self.relation,
            "detail": self.detail,
            "error": self.error,
        }


def clean_error(text: str | None) -> str | None:
    """Error text from the database, safe to log and return: control characters escaped, cut."""
    if text is None:
        return None
    escaped = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return escaped if len(escaped) <= ERROR_MAX_CHARS else escaped[:ERROR_MAX_CHARS] + "..."


def _ago(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def evaluate(
    states: Sequence[JobState],
    now: float,
    first_seen: Mapping[str, float],
    scheduler_alive: bool | None = None,
) -> list[JobProblem]:
    """The problems of ``states`` at ``now`` (epoch seconds). ``first_seen``: when each job was
    first observed (the reference for a job that never succeeded); ``scheduler_alive``: None when
    there is no scheduler to ask about (plain PostgreSQL)."""
    problems: list[JobProblem] = []
    if scheduler_alive is False:
        problems.append(
            JobProblem(
                "scheduler",
                "scheduler_down",
                None,
                "no TimescaleDB job scheduler runs for this database: no policy runs",
            )
        )
    for s in states:
        error = clean_error(s.last_error)
        if not s.scheduled:
            problems.append(JobProblem(s.job, "paused", s.relation, "the job is not scheduled"))
            continue
        if s.last_run_failed:
            problems.append(
                JobProblem(
                    s.job,
                    "failed",
                    s.relation,
                    f"its last run failed ({s.total_failures} failed runs in all)",
                    error,
                )
            )
            continue
        since = s.last_success if s.last_success is not None else first_seen.get(s.job, now)
        if now - since > 2 * s.schedule_s:
            what = "last succeeded" if s.last_success is not None else "no success seen in"
            problems.append(
                JobProblem(
                    s.job,
                    "overdue",
                    s.relation,
                    f"{what} {_ago(now - since)} ago; it runs every {_ago(s.schedule_s)}",
                    error if s.last_error_at is not None and s.last_error_at >= since else None,
                )
            )
    return problems


async def record_run(
    conn: Statements,
    job: str,
    kind: str,
    relation: str | None,
    schedule_s: float,
    started: datetime,
    error: str | None,
) -> None:
    """Record one run the service performed itself (``error`` None: it succeeded)."""
    # stored as raw as the scheduler stores its errors; escaped where it is shown (evaluate)
    await conn.execute(
        queries.RECORD_RUN,
        job,
        kind,
        relation,
        schedule_s,
        started.timestamp(),
        None if error is None else error[:ERROR_MAX_CHARS],
    )


class JobHealth:
    """The job check of one process: the last answer, and what changed since the one before."""

    def __init__(self, flavour: str) -> None:
        self.flavour = flavour
        self.first_seen: dict[str, float] = {}
        self.problems: list[JobProblem] = []
        self.states: list[JobState] = []
        self.checked_at: datetime | None = None
        self.check_error: str | None = None
        self._failures_seen: dict[str, int] = {}

    async def check(self, conn: Statements) -> list[JobProblem]:
        """Read the jobs, judge them, log and count what changed; returns the problems."""
        rows = await conn.fetch(queries.JOB_STATUS)
        alive: bool | None = None
        if self.flavour == "timescale":
            alive = bool((await conn.fetch(queries.SCHEDULER_ALIVE))[0]["alive"])
        now = float(rows[0]["now"]) if rows else datetime.now(UTC).timestamp()
        states = [JobState.from_row(r) for r in rows]
        for s in states:
            self.first_seen.setdefault(s.job, now)
            before = self._failures_seen.get(s.job)
            if before is not None and s.total_failures > before:
                JOB_FAILED_RUNS.labels(s.job).inc(s.total_failures - before)
            self._failures_seen[s.job] = s.total_failures
        problems = evaluate(states, now, self.first_seen, alive)
        self._report(problems)
        self.states, self.problems = states, problems
        self.checked_at, self.check_error = datetime.now(UTC), None
        return problems

    def check_failed(self, exc: BaseException) -> None:
        """The jobs could not be read (database away): say so in the status, keep the last answer."""
        JOB_CHECKS_FAILED.inc()
        self.check_error = clean_error(f"{type(exc).__name__}: {exc}")

    def _report(self, problems: list[JobProblem]) -> None:
        old = {(p.job, p.problem) for p in self.problems}
        new = {(p.job, p.problem) for p in problems}
        for p in problems:
            if (p.job, p.problem) not in old:
                log.error(
                    "maintenance job %s: %s: %s%s",
                    p.job,
                    p.problem,
                    p.detail,
                    f"; error: {p.error}" if p.error else "",
                )
        for job, problem in old - new:
            log.warning("maintenance job %s: %s resolved", job, problem)
            JOB_PROBLEMS.labels(job, problem).set(0)
        for job, problem in new:
            JOB_PROBLEMS.labels(job, problem).set(1)

    def failing_relations(self) -> set[str] | None:
        """Candle relations whose refresh is not being done (None: every level, the scheduler is down)."""
        if any(p.problem == "scheduler_down" for p in self.problems):
            return None
        refresh = {s.job for s in self.states if s.kind == "refresh"}
        return {p.relation for p in self.problems if p.job in refresh and p.relation}

    def status(self) -> dict[str, Any]:
        """For ``/api/status`` and ``/health``: ``ok`` False while any job has a problem."""
        return {
            "ok": not self.problems and self.check_error is None,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "check_error": self.check_error,
            "problems": [p.as_dict() for p in self.problems],
            "jobs": len(self.states),
        }
