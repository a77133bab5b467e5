"""Job health, the fallback refresh and the late-data catch-up on a real TimescaleDB engine.

The engine (PGlite + TimescaleDB 2.23 in Node, tests/timescale/engine.py) has no background
scheduler, which is exactly the "scheduler stopped" case. A failed background run is written the
way TimescaleDB's scheduler records one (``_timescaledb_internal.bgw_job_stat`` and
``bgw_job_stat_history``, read by ``timescaledb_information.job_stats`` / ``job_errors``): the
engine cannot run a background job, and a foreground ``CALL run_job`` records nothing. The code
under test runs unchanged: its two connection calls go over the engine bridge.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.oracle import RawTick, candles
from tests.storage.test_timescale_engine import assert_same_candles, rows_of
from tests.timescale.engine import TimescaleEngine
from trading_helper.config import Settings
from trading_helper.storage.catchup import catch_up
from trading_helper.storage.jobs import JobHealth
from trading_helper.storage.maintenance import Maintenance

PORTAL = 'cannot drop portal "" while it is being set up'


@pytest.fixture(scope="module")
def engine(timescale_engine: TimescaleEngine) -> TimescaleEngine:
    return timescale_engine


def engine_now(engine: TimescaleEngine) -> datetime:
    return datetime.fromisoformat(engine.query("SELECT now()")[0][0])


def recent_ticks(now: datetime, instruments: tuple[int, ...] = (1, 2)) -> list[RawTick]:
    """Ticks every ~7 minutes over the last 2.5 days (inside the policies' 6-day window)."""
    return [
        RawTick(
            now - timedelta(minutes=7 * i, seconds=inst, microseconds=i),
            inst,
            100.0 + (i * 7 + inst) % 23,
            i % 5,
            None if i % 3 else 1000 + i,
        )
        for inst in instruments
        for i in range(520)
    ]


def policy_job(engine: TimescaleEngine, relation: str) -> int:
    [[job_id]] = engine.query(
        "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_name = $1 "
        "AND proc_name = 'policy_refresh_continuous_aggregate'",
        relation,
    )
    return int(job_id)


def record_failed_background_run(engine: TimescaleEngine, job_id: int, error: str) -> None:
    """What TimescaleDB's scheduler writes when a background run of ``job_id`` fails."""
    engine.query(
        "INSERT INTO _timescaledb_internal.bgw_job_stat (job_id, last_start, last_finish, next_start, "
        "last_successful_finish, last_run_success, total_runs, total_duration, total_duration_failures, "
        "total_successes, total_failures, total_crashes, consecutive_failures, consecutive_crashes, flags) "
        "VALUES ($1, now() - interval '2 minutes', now() - interval '119 seconds', now() + interval '5 minutes', "
        "'-infinity', false, 3, interval '3 seconds', interval '3 seconds', 0, 3, 0, 3, 0, 0) "
        "ON CONFLICT (job_id) DO UPDATE SET last_run_success = false, total_failures = 3, total_runs = 3, "
        "last_finish = excluded.last_finish, last_start = excluded.last_start",
        job_id,
    )
    engine.query(
        "INSERT INTO _timescaledb_internal.bgw_job_stat_history (job_id, pid, execution_start, execution_finish, "
        "succeeded, data) VALUES ($1, 4242, now() - interval '2 minutes', now() - interval '119 seconds', false, "
        "$2::jsonb)",
        job_id,
        json.dumps(
            {
                "job": {
                    "proc_schema": "_timescaledb_functions",
                    "proc_name": "policy_refresh_continuous_aggregate",
                },
                "error_data": {"message": error, "sqlerrcode": "55000"},
            }
        ),
    )


def clear_job_records(engine: TimescaleEngine) -> None:
    engine.query("DELETE FROM _timescaledb_internal.bgw_job_stat_history")
    engine.query(
        "DELETE FROM _timescaledb_internal.bgw_job_stat WHERE job_id IN "
        "(SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = "
        "'policy_refresh_continuous_aggregate')"
    )


async def test_job_status_lists_every_policy_and_a_stopped_scheduler_is_a_problem(
    engine: TimescaleEngine,
) -> None:
    clear_job_records(engine)
    health = JobHealth("timescale")
    problems = await health.check(engine.connection())
    jobs = {s.job: s for s in health.states}
    assert {f"refresh candles_{tf}" for tf in ("1m", "5m", "15m", "1h", "1d")} <= set(jobs)
    assert {"compression tick_data", "retention tick_data", "apply_retention_job"} <= set(jobs)
    assert jobs["refresh candles_1m"].schedule_s == 60 and jobs["refresh candles_1d"].schedule_s == 3600
    assert [(p.job, p.problem) for p in problems] == [("scheduler", "scheduler_down")]
    assert health.failing_relations() is None  # every level needs the fallback
    status = health.status()
    assert status["ok"] is False and status["problems"][0]["problem"] == "scheduler_down"


async def test_a_failed_background_run_is_reported_with_its_error(engine: TimescaleEngine) -> None:
    clear_job_records(engine)
    job_id = policy_job(engine, "candles_5m")
    record_failed_background_run(engine, job_id, PORTAL)
    health = JobHealth("timescale")
    problems = await health.check(engine.connection())
    failed = [p for p in problems if p.problem == "failed"]
    assert [(p.job, p.relation, p.error) for p in failed] == [("refresh candles_5m", "candles_5m", PORTAL)]
    assert "3 failed runs" in failed[0].detail
    assert "candles_5m" in health.status()["problems"][1]["relation"]
    clear_job_records(engine)


async def test_with_the_scheduler_stopped_the_fallback_keeps_every_level_equal_to_the_ticks(
    engine: TimescaleEngine,
) -> None:
    engine.reset()
    now = engine_now(engine)
    ticks = recent_ticks(now)
    engine.load(rows_of(ticks))
    health = JobHealth("timescale")
    await health.check(engine.connection())
    report = await catch_up(engine.connection(), "timescale", fallback=health.failing_relations())
    assert {rel for rel, *_ in report.refreshed} == {
        f"candles_{tf}" for tf in ("1m", "5m", "15m", "1h", "1d")
    }
    assert [rel for rel, *_ in report.refreshed] == sorted(
        (rel for rel, *_ in report.refreshed),
        key=["candles_1m", "candles_5m", "candles_15m", "candles_1h", "candles_1d"].index,
    )  # lowest level first
    marks = dict(
        engine.query(
            "SELECT user_view_name, _timescaledb_functions.cagg_watermark(mat_hypertable_id) > 0 "
            "FROM _timescaledb_catalog.continuous_agg"
        )
    )
    assert all(marks.values()), marks  # every level was materialised, not just served live
    assert_same_candles(engine.candles(), candles(ticks))


async def test_late_ticks_below_every_watermark_are_refreshed_level_by_level(engine: TimescaleEngine) -> None:
    engine.reset()
    now = engine_now(engine)
    ticks = recent_ticks(now, (3,))
    engine.load(rows_of(ticks))
    await catch_up(engine.connection(), "timescale", fallback=None)  # everything materialised
    # a drained backlog: ticks for buckets far below every level's watermark, and a new instrument
    late = [
        RawTick(now - timedelta(days=2, minutes=3, microseconds=7), 3, 5.5, 40, 77),
        RawTick(now - timedelta(days=1, hours=5, seconds=1), 3, 999.0, 12, None),
        RawTick(now - timedelta(hours=3, seconds=2), 4, 321.0, 3, 9),
    ]
    engine.load(rows_of(late))
    before = engine.candles()
    assert before != candles(ticks + late)  # not visible at some level without a refresh
    report = await catch_up(engine.connection(), "timescale", fallback=())
    assert report.refreshed and {why for *_, why in report.refreshed} == {"late data"}
    assert {rel for rel, *_ in report.refreshed} == {
        f"candles_{tf}" for tf in ("1m", "5m", "15m", "1h", "1d")
    }
    assert_same_candles(engine.candles(), candles(ticks + late))


def watermark(engine: TimescaleEngine, relation: str) -> datetime:
    [[mark]] = engine.query(
        "SELECT _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(mat_hypertable_id))::text "
        "FROM _timescaledb_catalog.continuous_agg WHERE user_view_name = $1",
        relation,
    )
    return datetime.fromisoformat(mark)


async def test_late_ticks_between_the_utc_threshold_and_the_ist_watermark_reach_1h_and_1d(
    engine: TimescaleEngine,
) -> None:
    """TimescaleDB 2.23 (timescaledb #9308) aligns a hierarchical level's invalidation threshold to
    UTC hours and days while its watermark follows the IST origin: a row of the level below changed
    between the two is never logged. The old catch-up left such a tick out of 1d (an IST morning:
    the whole session) and 1h (the last 45 minutes below the watermark), whatever the time of day
    the test ran at; placed there on purpose here."""
    engine.reset()
    now = engine_now(engine)
    ticks = recent_ticks(now, (6,))
    engine.load(rows_of(ticks))
    await catch_up(engine.connection(), "timescale", fallback=None)
    day_mark, hour_mark = watermark(engine, "candles_1d"), watermark(engine, "candles_1h")
    assert (day_mark.hour, day_mark.minute) == (18, 45) and hour_mark.minute == 45  # IST-aligned
    late = [
        # 09:30 IST in the last materialised IST day: after 00:00 UTC, before its 18:45 UTC end
        RawTick(day_mark - timedelta(days=1) + timedelta(hours=9, minutes=15, seconds=1), 6, 4.25, 70, 11),
        # half an hour into the last materialised hour: after its xx:00 UTC, before its xx:45 end
        RawTick(hour_mark - timedelta(minutes=30, seconds=1), 6, 9999.0, 5, None),
    ]
    assert late[0].time < day_mark and late[1].time < hour_mark  # both already materialised
    engine.load(rows_of(late))
    report = await catch_up(engine.connection(), "timescale", fallback=())
    assert {rel for rel, *_ in report.refreshed} >= {"candles_1h", "candles_1d"}
    assert_same_candles(engine.candles(), candles(ticks + late))
    assert watermark(engine, "candles_1d") == day_mark  # the forming and last IST day stay real-time


async def test_the_service_maintenance_falls_back_only_when_allowed(engine: TimescaleEngine) -> None:
    engine.reset()
    engine.query("DELETE FROM maintenance_runs")
    now = engine_now(engine)
    ticks = recent_ticks(now, (5,))
    engine.load(rows_of(ticks))
    pool: Any = engine.pool()

    off = Maintenance(Settings(JOB_FALLBACK_REFRESH=False), pool, "timescale")
    await off.step(now=0.0)
    status = off.status()
    assert status["ok"] is False and status["fallback_refresh"] is False
    assert [p["problem"] for p in status["problems"]] == ["scheduler_down"]
    assert "last_catch_up" not in status  # nothing invalidated below a watermark, no fallback
    marks = engine.query(
        "SELECT count(*) FILTER (WHERE _timescaledb_functions.cagg_watermark(mat_hypertable_id) > 0) "
        "FROM _timescaledb_catalog.continuous_agg"
    )
    assert marks == [[0]]  # left to the (stopped) policies, as the setting says

    on = Maintenance(Settings(), pool, "timescale")
    await on.step(now=0.0)
    assert "candles_1d" in on.status()["last_catch_up"] and on.last_refresh_at is not None
    assert_same_candles(engine.candles(), candles(ticks))
    [[runs, failed]] = engine.query(
        "SELECT total_runs, last_run_failed FROM maintenance_runs WHERE job = 'candle catch-up'"
    )
    assert runs == 2 and failed is False  # recorded on every turn, shown in job_status
    await on.step(now=100.0)  # the next check reads the service's own runs beside the policies
    catch = [s for s in on.health.states if s.job == "candle catch-up"]
    assert catch and catch[0].job_id is None and catch[0].last_success is not None
    assert "candle catch-up" not in {p["job"] for p in on.status()["problems"]}


async def test_the_maintenance_folds_the_volume_log_on_timescaledb(engine: TimescaleEngine) -> None:
    engine.query("DELETE FROM tick_volume_log")
    engine.query("DELETE FROM tick_volume_state")
    for volume in (100, 160):  # two commits of one stream
        engine.query(
            "INSERT INTO tick_volume_log (stream, instrument_id, trading_day, volume, last_us, trade_us, "
            f"capture_us) VALUES ('s', '{{7,8}}', '{{20790,20790}}', '{{{volume},5}}', '{{1,1}}', '{{-1,-1}}', "
            "'{-1,-1}')"
        )
    job: Any = Maintenance(Settings(), engine.pool(), "timescale")
    await job.fold_volume_log()
    assert job.folded == 2 and not job._fold_failing
    assert engine.query("SELECT count(*) FROM tick_volume_log") == [[0]]
    assert engine.query("SELECT instrument_id, volume FROM tick_volume_state ORDER BY 1") == [
        [7, 160],
        [8, 5],
    ]
