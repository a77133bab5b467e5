"""The system health dashboard: is data arriving, how late, and is the broker connected.

Everything here is read from the database as the read-only ``grafana_reader`` role: ingest rate
and lag from every stored update (``tick_data`` and ``quote_updates``: exchange time against
``received_at``), the broker connection
from ``live_coverage`` (the ingest service extends an open period while its connection is up).
Rejected ticks never reach the database: they are counted by reason in the Prometheus counter
``ticks_rejected_total`` on the API's ``/metrics``. What the database can show is the ticks that
arrived late, the usual first sign of a struggling feed. The queries are in
``storage/sql_dashboards.py``.
"""

from __future__ import annotations

from trading_helper.grafana.panels import Json, Panel, dashboard
from trading_helper.storage import sql_dashboards as sql

UID = "th-system-health"


def build() -> Json:
    panels = [
        Panel(
            "Ingest rate",
            "timeseries",
            sql.INGEST_RATE,
            width=16,
            unit="short",
            description="Ticks stored per second, by arrival time.",
        ),
        Panel(
            "Last minute",
            "stat",
            sql.TICKS_LAST_MINUTE,
            width=8,
            description="Ticks stored with an exchange time in the last minute.",
        ),
        Panel(
            "Stream lag",
            "timeseries",
            sql.STREAM_LAG,
            width=12,
            unit="s",
            description="received_at - exchange time: how late ticks reach us.",
        ),
        Panel(
            "Late ticks",
            "timeseries",
            sql.LATE_TICKS,
            width=12,
            description=f"Ticks received more than {sql.LATE_AFTER_S} s after their exchange time. Rejected "
            "ticks are not stored: see ticks_rejected_total on the API's /metrics.",
        ),
        Panel(
            "Broker connection",
            "table",
            sql.BROKER_CONNECTION,
            width=12,
            description="From live_coverage: connected while an open capture period is being extended.",
        ),
        Panel(
            "Instruments captured",
            "timeseries",
            sql.CAPTURED_INSTRUMENTS,
            width=12,
            description="Instruments inside a live capture period at each moment.",
        ),
        Panel(
            "Maintenance jobs",
            "table",
            sql.JOB_HEALTH,
            width=18,
            description="Candle refresh, compression and retention jobs: a failed or overdue one leaves "
            "candles stale (the service then refreshes them itself). Also th_job_problem "
            "on the API's /metrics.",
        ),
        Panel(
            "Jobs with a problem",
            "stat",
            sql.JOB_PROBLEMS,
            width=6,
            description="Maintenance jobs failed, overdue or paused, and a stopped TimescaleDB scheduler.",
        ),
        Panel(
            "Alert history",
            "table",
            sql.ALERT_HISTORY,
            width=24,
            description="Every alert trigger (newest first) with its delivery attempts and whether one "
            "succeeded; per rule also GET /api/alerts/{id}/history.",
        ),
    ]
    return dashboard(
        UID,
        "Trading Helper: system health",
        panels,
        time_from="now-3h",
        refresh="10s",
        tags=["trading-helper", "health"],
        description="Ingest rate, stream lag, late ticks, the broker connection, the maintenance jobs and the alert history.",
    )
