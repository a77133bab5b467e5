"""Job health on plain PostgreSQL: the service's rollup and retention runs recorded and judged,
a failing rollup shown in /health and /api/status (real database, real API over a socket)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api.server import serve
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.config import Settings
from trading_helper.storage.jobs import JobHealth, JobState, clean_error, evaluate
from trading_helper.storage.maintenance import Maintenance

pytestmark = pytest.mark.flavour(
    "postgres", "the service's own rollup and retention run only on plain PostgreSQL"
)

BOOM = "rollup refused: disk\nfull \x1b[31m"


def state(**kw: Any) -> JobState:
    base: dict[str, Any] = dict(
        job="refresh candles_1m",
        job_id=1002,
        kind="refresh",
        relation="candles_1m",
        schedule_s=60.0,
        scheduled=True,
        last_start=None,
        last_success=None,
        last_run_failed=False,
        last_error=None,
        last_error_at=None,
        total_runs=0,
        total_failures=0,
    )
    base.update(kw)
    return JobState(**base)


def test_the_rule() -> None:
    now = 10_000.0
    ok = state(last_success=now - 100)  # within 2 x 60 s
    late = state(job="b", last_success=now - 121)
    failed = state(job="c", last_run_failed=True, last_error="boom", total_failures=4, last_success=now - 1)
    never = state(job="d")
    paused = state(job="e", scheduled=False)
    problems = evaluate([ok, late, failed, never, paused], now, {"d": now - 60})
    assert [(p.job, p.problem) for p in problems] == [("b", "overdue"), ("c", "failed"), ("e", "paused")]
    assert problems[1].error == "boom" and "4 failed runs" in problems[1].detail
    # a job never seen succeeding is overdue two intervals after this process first saw it
    assert [p.problem for p in evaluate([never], now, {"d": now - 121})] == ["overdue"]
    assert [p.problem for p in evaluate([], now, {}, scheduler_alive=False)] == ["scheduler_down"]
    assert evaluate([], now, {}, scheduler_alive=True) == []


def test_error_text_is_escaped_and_bounded() -> None:
    assert clean_error(BOOM) == "rollup refused: disk\\nfull \\x1b[31m"
    assert len(clean_error("x" * 5000) or "") == 503


class Ingest:
    """The API's view of the ingest service (IngestControl), here just its maintenance part."""

    def __init__(self, maintenance: Maintenance) -> None:
        self.maintenance = maintenance

    async def subscribe(self, instrument_ids: Sequence[int]) -> None: ...

    async def unsubscribe(self, instrument_ids: Sequence[int]) -> None: ...

    def status(self) -> dict[str, object]:
        return {"feed_state": "connected", "received": 0, "written": 0, "jobs": self.maintenance.status()}


async def test_a_failing_rollup_is_recorded_and_shown_in_health_and_status(db_pool: asyncpg.Pool) -> None:
    settings = Settings(REFRESH_INTERVAL_S=5, JOB_CHECK_INTERVAL_S=30, API_TOKEN="t" * 24)
    maintenance = Maintenance(settings, db_pool, "postgres")
    await maintenance.step(now=1_000.0)  # rollup, retention, check: all fine
    assert maintenance.status()["ok"] is True and maintenance.last_refresh_at is not None
    runs = {r["job"]: r for r in await db_pool.fetch("SELECT * FROM job_status")}
    assert set(runs) == {"refresh_candles", "apply_retention"}
    assert (
        runs["refresh_candles"]["last_success"] is not None and not runs["refresh_candles"]["last_run_failed"]
    )

    # the rollup starts failing (a simulated database error inside refresh_candles)
    original = await db_pool.fetchval("SELECT pg_get_functiondef('refresh_candles'::regproc)")
    await db_pool.execute(f"""CREATE OR REPLACE PROCEDURE refresh_candles() LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION USING ERRCODE = '53100', MESSAGE = {_literal(BOOM)}; END $$""")
    try:
        await maintenance.step(now=1_006.0)  # the rollup runs and fails; no check is due yet
        assert maintenance.status()["ok"] is True
        await maintenance.step(now=1_031.0)  # the next check (one interval later) sees it
        status = maintenance.status()
        assert status["ok"] is False
        [problem] = status["problems"]
        assert problem["job"] == "refresh_candles" and problem["problem"] == "failed"
        assert problem["error"] == "DiskFullError: rollup refused: disk\\nfull \\x1b[31m"
        row = await db_pool.fetchrow("SELECT * FROM maintenance_runs WHERE job = 'refresh_candles'")
        assert row["total_failures"] == 2 and row["last_success"] is not None  # runs at 1006 and 1031

        app = create_app(Runtime(settings=settings, pool=db_pool, ingest=Ingest(maintenance)))
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            health = (await client.get("/health")).json()
            assert health["status"] == "degraded"
            assert health["jobs"][0]["job"] == "refresh_candles" and "disk" in health["jobs"][0]["error"]
            api = (await client.get("/api/status", headers={"Authorization": f"Bearer {'t' * 24}"})).json()
            assert api["ingest"]["jobs"]["problems"][0]["problem"] == "failed"
    finally:
        await db_pool.execute(original)
    await maintenance.step(now=1_062.0)  # rollup works again; the check clears the problem
    assert maintenance.status()["ok"] is True
    assert (
        await db_pool.fetchrow(
            "SELECT last_run_failed, last_error FROM maintenance_runs WHERE job = 'refresh_candles'"
        )
    )["last_error"].startswith("DiskFullError")


async def test_a_stalled_rollup_is_overdue(db_pool: asyncpg.Pool) -> None:
    await db_pool.execute(
        "UPDATE maintenance_runs SET last_success = now() - interval '11 seconds', "
        "last_run_failed = false WHERE job = 'refresh_candles'"
    )
    health = JobHealth("postgres")
    async with db_pool.acquire() as conn:
        problems = await health.check(conn)
    assert [(p.job, p.problem) for p in problems] == [("refresh_candles", "overdue")]  # 11 s > 2 x 5 s


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def test_a_new_owner_resumes_the_hourly_schedules_where_the_last_left_them(
    db_pool: asyncpg.Pool,
) -> None:
    """Retention and the hourly jobs that succeeded within the hour are not run again at the
    start of a new owner (a takeover ran them all at once, the F&O archive reading the day's
    ticks beside the taker's catch-up); those never run are due at once."""
    settings = Settings(REFRESH_INTERVAL_S=5, JOB_CHECK_INTERVAL_S=30, API_TOKEN="t" * 24)
    ran: list[str] = []

    async def archive() -> None:
        ran.append("archive")

    first = Maintenance(settings, db_pool, "postgres", hourly=(("test_archive", archive),))
    await db_pool.execute("DELETE FROM maintenance_runs WHERE job = 'test_archive'")
    await first.resume(now=100.0)
    await first.step(now=100.0)  # nothing recorded for the archive: due at once
    assert ran == ["archive"]
    await db_pool.execute(
        "UPDATE maintenance_runs SET last_success = now() - interval '20 minutes' "
        "WHERE job IN ('test_archive', 'apply_retention')"
    )
    taker = Maintenance(settings, db_pool, "postgres", hourly=(("test_archive", archive),))
    await taker.resume(now=5_000.0)
    retention_before = await db_pool.fetchval(
        "SELECT total_runs FROM maintenance_runs WHERE job = 'apply_retention'"
    )
    await taker.step(now=5_000.0)
    assert ran == ["archive"]  # 20 minutes ago: not again
    assert (
        await db_pool.fetchval("SELECT total_runs FROM maintenance_runs WHERE job = 'apply_retention'")
        == retention_before
    )
    await taker.step(now=5_000.0 + 41 * 60)  # an hour after the last run
    assert ran == ["archive", "archive"]
