"""The system health dashboard: is data arriving, how late, and is the broker connected.

Everything here is read from the database as the read-only ``grafana_reader`` role: ingest rate
and lag from every stored update (``tick_data`` and ``quote_updates``: exchange time against
``received_at``), the broker connection
from ``live_coverage`` (the ingest service extends an open period while its connection is up).
Rejected ticks never reach the database: they are counted by reason in the Prometheus counter
``ticks_rejected_total`` on the API's ``/metrics``. What the database can show is the ticks that
arrived late, the usual first sign of a struggling feed.
"""

from __future__ import annotations

from trading_helper.grafana.panels import Json, Panel, dashboard

UID = "th-system-health"
LATE_AFTER_S = 3  # the worst delay seen in practice from Indian brokers is about 3 s

# Every update the feed delivered: trades (tick_data) and updates with no new trade
# (quote_updates), by the feed's exchange time (tick_data.time is the trade's time; exchange_time
# is NULL only on rows from before schema version 6).
UPDATES = """(
    SELECT coalesce(exchange_time, time) AS time, instrument_id, received_at FROM tick_data
    WHERE $__timeFilter(time)
    UNION ALL
    SELECT time, instrument_id, received_at FROM quote_updates
    WHERE $__timeFilter(time)
) u"""

INGEST_RATE = f"""
SELECT $__timeGroupAlias(received_at, $__interval),
       count(*) / ($__interval_ms / 1000.0) AS "ticks/s"
FROM {UPDATES}
GROUP BY 1
ORDER BY 1
"""

TICKS_LAST_MINUTE = """
SELECT count(*) AS "ticks in the last minute",
       count(DISTINCT instrument_id) AS "instruments ticking"
FROM (
    SELECT instrument_id FROM tick_data WHERE time > now() - interval '1 minute'
    UNION ALL
    SELECT instrument_id FROM quote_updates WHERE time > now() - interval '1 minute'
) u
"""

STREAM_LAG = f"""
SELECT $__timeGroupAlias(time, $__interval),
       avg(extract(epoch FROM received_at - time))::float8 AS "average lag",
       (percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - time)))::float8
           AS "p99 lag",
       max(extract(epoch FROM received_at - time))::float8 AS "max lag"
FROM {UPDATES}
GROUP BY 1
ORDER BY 1
"""

LATE_TICKS = f"""
SELECT $__timeGroupAlias(time, $__interval),
       count(*) FILTER (WHERE received_at - time > interval '{LATE_AFTER_S} seconds') AS "late ticks",
       count(*) FILTER (WHERE received_at < time) AS "ticks from the future"
FROM {UPDATES}
GROUP BY 1
ORDER BY 1
"""

# One row per broker: connected while an open period was extended in the last minute.
BROKER_CONNECTION = """
SELECT broker,
       CASE WHEN max(coalesce(upper(period), now())) FILTER (WHERE open) >= now() - interval '1 minute'
            THEN 'connected' ELSE 'disconnected' END AS state,
       count(DISTINCT instrument_id) FILTER (WHERE open) AS "instruments live",
       max(coalesce(upper(period), now())) AS "last confirmed",
       extract(epoch FROM now() - max(coalesce(upper(period), now())))::float8 AS "seconds since"
FROM live_coverage
GROUP BY broker
ORDER BY broker
"""

# How many instruments were being captured at each moment: a drop to zero is a disconnection.
CAPTURED_INSTRUMENTS = """
SELECT s.t AS time, count(DISTINCT c.instrument_id) AS "instruments captured"
FROM generate_series(th_bucket(greatest($__interval_ms, 60000) * interval '1 millisecond',
                               $__timeFrom()::timestamptz),
                     $__timeTo()::timestamptz,
                     greatest($__interval_ms, 60000) * interval '1 millisecond') AS s(t)
LEFT JOIN live_coverage c ON c.period @> s.t
GROUP BY s.t
ORDER BY s.t
"""


# One row per maintenance job (job_status, migration 7: TimescaleDB's policy jobs, or the
# service's own rollup/retention runs on plain PostgreSQL), judged by the same rule as the
# service's check (storage/jobs.py): failed last run, or no success within twice the schedule;
# on TimescaleDB one more row when no job scheduler runs for this database (then no policy runs).
_JOB_STATES = """
SELECT job, CASE WHEN NOT scheduled THEN 'paused'
                 WHEN last_run_failed THEN 'failed'
                 WHEN coalesce(last_success, last_start, '-infinity') < now() - 2 * schedule_interval
                 THEN 'overdue'
                 ELSE 'ok' END AS state,
       last_success, total_failures, last_error, last_error_at
FROM job_status
UNION ALL
SELECT 'job scheduler', 'stopped', NULL, NULL,
       'no TimescaleDB Background Worker Scheduler for this database', NULL
WHERE EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
  AND NOT EXISTS (SELECT 1 FROM pg_stat_activity
                  WHERE datname = current_database()
                    AND (backend_type = 'TimescaleDB Background Worker Scheduler'
                         OR application_name = 'TimescaleDB Background Worker Scheduler'))
"""

JOB_HEALTH = f"""
SELECT job, state, last_success AS "last success", total_failures AS "failed runs",
       last_error AS "last error", last_error_at AS "error at"
FROM ({_JOB_STATES}) AS jobs
ORDER BY state = 'ok', job
"""

JOB_PROBLEMS = f"""
SELECT count(*) FILTER (WHERE state <> 'ok') AS "jobs with a problem"
FROM ({_JOB_STATES}) AS jobs
"""


def build() -> Json:
    panels = [
        Panel(
            "Ingest rate",
            "timeseries",
            INGEST_RATE,
            width=16,
            unit="short",
            description="Ticks stored per second, by arrival time.",
        ),
        Panel(
            "Last minute",
            "stat",
            TICKS_LAST_MINUTE,
            width=8,
            description="Ticks stored with an exchange time in the last minute.",
        ),
        Panel(
            "Stream lag",
            "timeseries",
            STREAM_LAG,
            width=12,
            unit="s",
            description="received_at - exchange time: how late ticks reach us.",
        ),
        Panel(
            "Late ticks",
            "timeseries",
            LATE_TICKS,
            width=12,
            description=f"Ticks received more than {LATE_AFTER_S} s after their exchange time. Rejected "
            "ticks are not stored: see ticks_rejected_total on the API's /metrics.",
        ),
        Panel(
            "Broker connection",
            "table",
            BROKER_CONNECTION,
            width=12,
            description="From live_coverage: connected while an open capture period is being extended.",
        ),
        Panel(
            "Instruments captured",
            "timeseries",
            CAPTURED_INSTRUMENTS,
            width=12,
            description="Instruments inside a live capture period at each moment.",
        ),
        Panel(
            "Maintenance jobs",
            "table",
            JOB_HEALTH,
            width=18,
            description="Candle refresh, compression and retention jobs: a failed or overdue one leaves "
            "candles stale (the service then refreshes them itself). Also th_job_problem "
            "on the API's /metrics.",
        ),
        Panel(
            "Jobs with a problem",
            "stat",
            JOB_PROBLEMS,
            width=6,
            description="Maintenance jobs failed, overdue or paused, and a stopped TimescaleDB scheduler.",
        ),
    ]
    return dashboard(
        UID,
        "Trading Helper: system health",
        panels,
        time_from="now-3h",
        refresh="10s",
        tags=["trading-helper", "health"],
        description="Ingest rate, stream lag, late ticks, the broker connection and the maintenance jobs.",
    )
