"""The same panel queries on TimescaleDB (the PGlite + TimescaleDB engine of tests/timescale), with
the datasource's ``timescaledb`` flag on ($__timeGroup becomes time_bucket), as grafana_reader."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.grafana.grafana_sql import QueryContext, interpolate
from tests.grafana.option_data import OPTION_EXPIRY, engine_statements
from tests.grafana.shapes import check_shape, panels
from tests.timescale.engine import TimescaleEngine, tick_row
from trading_helper.grafana.market_overview import TIMEFRAMES

SESSION = timedelta(hours=2)
EVERY = timedelta(seconds=20)


@dataclass(frozen=True)
class Loaded:
    engine: TimescaleEngine
    instrument_ids: list[int]
    start: datetime
    end: datetime


def _rows(
    iid: int, n: int, start: datetime, end: datetime, spike_from: datetime | None
) -> list[dict[str, Any]]:
    rows, t, step = [], start, 0
    while t <= end:
        qty = (10 + (step * 7 + n) % 30) * (50 if spike_from is not None and t >= spike_from else 1)
        price = round(100.0 * (n + 1) + (step % 11) * 0.35 - (step % 7) * 0.2, 2)
        rows.append(
            tick_row(
                t,
                iid,
                price,
                qty,
                50_000 + step,
                received_at=t + timedelta(milliseconds=500),
                bid_price=price - 0.05,
                ask_price=price + 0.05,
                bid_qty=10,
                ask_qty=12,
                last_qty=qty,
            )
        )
        t += EVERY
        step += 1
    return rows


@pytest.fixture(scope="module")
def loaded(timescale_engine: TimescaleEngine) -> Iterator[Loaded]:
    engine = timescale_engine
    ids = [
        row[0]
        for row in engine.query(
            "INSERT INTO instruments (exchange, tradingsymbol) SELECT 'NSE', 'TSG' || n "
            "FROM generate_series(1, 3) AS n RETURNING id"
        )
    ]
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    rows = []
    for days in (1, 0):
        day_end = end - timedelta(days=days)
        for n, iid in enumerate(ids):
            spike = day_end - timedelta(minutes=3) if days == 0 and n == 0 else None
            rows += _rows(iid, n, day_end - SESSION, day_end, spike)
    engine.load(rows)
    first = (end - timedelta(days=1) - SESSION).replace(hour=0, minute=0, second=0) - timedelta(days=1)
    engine.refresh(first, end.replace(hour=0, minute=0, second=0) + timedelta(days=2))
    for iid in ids:
        engine.query(
            "INSERT INTO live_coverage (instrument_id, broker, period) "
            "VALUES ($1, 'sim', tstzrange($2::timestamptz, now()))",
            iid,
            (end - SESSION).isoformat(),
        )
    for sql, params in engine_statements(ids[0], end):
        engine.fetch(sql, *params)
    # one alert delivered on its second attempt (the alert-history panel)
    [[rule_id]] = engine.query(
        'INSERT INTO alert_rules (instrument_id, spec) VALUES ($1, \'{"on": "tick"}\'::jsonb) RETURNING id',
        ids[0],
    )
    [[trigger_id]] = engine.query(
        "INSERT INTO alert_triggers (rule_id, idempotency_key, observed_at, fired_at, payload) "
        'VALUES ($1, \'tsg-1\', $2::timestamptz, $2::timestamptz, \'{"name": "TSG", "left": 1.5}\'::jsonb) '
        "RETURNING id",
        rule_id,
        (end - timedelta(minutes=2)).isoformat(),
    )
    for attempt, ok in ((1, False), (2, True)):
        engine.query(
            "INSERT INTO alert_deliveries (trigger_id, channel, target, attempt, ok) VALUES ($1, 'webhook', 'x', $2, $3)",
            trigger_id,
            attempt,
            ok,
        )
    engine.query("SET ROLE grafana_reader")
    yield Loaded(engine, ids, end - timedelta(days=1) - SESSION, end)


def run(loaded: Loaded, sql: str) -> list[dict[str, Any]]:
    """Rows as dicts (names and order kept: the engine answers in JSON), times parsed."""
    [[answer]] = loaded.engine.query(f"SELECT coalesce(json_agg(q), '[]') FROM ({sql}) AS q")
    rows = json.loads(answer) if isinstance(answer, str) else answer
    for row in rows:
        if isinstance(row.get("time"), str):
            row["time"] = datetime.fromisoformat(row["time"])
    return rows


def test_the_engine_runs_queries_as_the_reader(loaded: Loaded) -> None:
    assert loaded.engine.query("SELECT current_user") == [["grafana_reader"]]


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
def test_every_panel_query_fits_its_panel_on_timescaledb(loaded: Loaded, timeframe: str) -> None:
    ctx = QueryContext(
        time_from=loaded.start - timedelta(minutes=5),
        time_to=loaded.end + timedelta(minutes=1),
        interval=timedelta(minutes=1),
        timescaledb=True,
        variables={
            "instrument": str(loaded.instrument_ids[0]),
            "timeframe": timeframe,
            "expiry": OPTION_EXPIRY.isoformat(),
        },
    )
    for dashboard, panel in panels():
        sql = interpolate(panel["targets"][0]["rawSql"], ctx)
        rows = run(loaded, sql)
        check_shape(panel, rows)
        if panel["type"] != "table" or panel["title"] != "Volume spikes ($timeframe)":
            assert rows, f"{dashboard}/{panel['title']} ({timeframe}) returned nothing on TimescaleDB"
    assert "time_bucket(" in interpolate("$__timeGroup(time, 1m)", ctx)


def test_candles_on_timescaledb_are_their_aggregate(loaded: Loaded) -> None:
    [candles] = [p for _, p in panels() if p["type"] == "candlestick"]
    ctx = QueryContext(
        time_from=loaded.start,
        time_to=loaded.end + timedelta(minutes=1),
        timescaledb=True,
        variables={"instrument": str(loaded.instrument_ids[1]), "timeframe": "15m"},
    )
    rows = run(loaded, interpolate(candles["targets"][0]["rawSql"], ctx))
    direct = loaded.engine.query(
        "SELECT count(*) FROM candles_15m WHERE instrument_id = $1 AND bucket >= $2 AND bucket < $3",
        loaded.instrument_ids[1],
        ctx.time_from.isoformat(),
        ctx.time_to.isoformat(),
    )
    assert len(rows) == direct[0][0] > 0
    assert all(r["time"].astimezone(UTC).minute % 15 == 0 for r in rows)
