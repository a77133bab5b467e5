"""GET /api/export/candles|ticks and `trading-helper export`: what they write reads back as the
API's own series, value for value and with the documented types, for every timeframe, in both
formats and both zones."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from tests.api.conftest import Api
from tests.export.helpers import run_cli
from tests.storage.helpers import refresh_all
from trading_helper.export.columns import names, schema
from trading_helper.export.files import read_export
from trading_helper.timeframes import IST, Timeframe

DAY = datetime(2024, 3, 5, tzinfo=IST)
RANGES = {
    Timeframe.M1: (DAY.replace(hour=9, minute=15), DAY.replace(hour=15, minute=30)),
    Timeframe.M5: (DAY.replace(hour=9, minute=15), DAY.replace(hour=15, minute=30)),
    Timeframe.M15: (DAY - timedelta(days=1), DAY + timedelta(days=1)),
    Timeframe.H1: (DAY - timedelta(days=1), DAY + timedelta(days=3)),
    Timeframe.D1: (DAY - timedelta(days=10), DAY + timedelta(days=10)),
}


async def _plant_live_ticks(api: Api) -> int:
    """Ticks for RELIANCE over 09:15-09:25 on DAY with 09:15-09:20 captured: the series then mixes
    live candles and broker history (the broker fills the rest of the session)."""
    pool = api.runtime.pool
    iid = int(await pool.fetchval("SELECT id FROM instruments WHERE tradingsymbol = 'RELIANCE'"))
    start = DAY.replace(hour=9, minute=15)
    await pool.execute("SELECT ensure_tick_partitions($1, $1)", start)
    await pool.execute(
        "INSERT INTO tick_data (time, instrument_id, ltp, volume_delta, open_interest, received_at) "
        "SELECT $2::timestamptz + g * interval '7 seconds', $1, 2500 + (g % 17) * 0.05, 1 + g % 5, "
        "NULLIF(g % 3, 0) * 1000, $2::timestamptz + g * interval '7 seconds' + interval '1 second' "
        "FROM generate_series(0, 85) g",
        iid,
        start,
    )
    await pool.execute(
        "INSERT INTO live_coverage (instrument_id, broker, period, open) VALUES ($1, 'kite', tstzrange($2, $3), false)",
        iid,
        start,
        start + timedelta(minutes=5),
    )
    await refresh_all(pool)
    return iid


def _expected(body: dict[str, Any], interval: str) -> list[dict[str, Any]]:
    return [
        {
            "instrument": "NSE:RELIANCE",
            "interval": interval,
            "time": datetime.fromisoformat(c["time"]),
            **{k: c[k] for k in ("open", "high", "low", "close", "volume", "open_interest", "source")},
        }
        for c in body["candles"]
    ]


def _same(table: pa.Table, expected: list[dict[str, Any]], zone: str) -> None:
    rows = table.to_pylist()
    assert rows == expected
    assert all(str(r["time"].tzinfo) == {"ist": "Asia/Kolkata", "utc": "UTC"}[zone] for r in rows)
    for row in rows:  # exact Python types: float prices, int volumes
        assert all(type(row[k]) is float for k in ("open", "high", "low", "close"))
        assert type(row["volume"]) is int and type(row["open_interest"]) in (int, type(None))


async def test_export_reads_back_as_the_api_series_for_every_timeframe(
    api: Api, db_dsn: str, tmp_path: Path
) -> None:
    await _plant_live_ticks(api)
    sources: set[str] = set()
    for tf, (start, end) in RANGES.items():
        params = {
            "instrument": "NSE:RELIANCE",
            "interval": tf.value,
            "from": start.isoformat(),
            "to": end.isoformat(),
        }
        answer = await api.client.get("/api/candles", params=params)
        assert answer.status_code == 200, answer.text
        expected = _expected(answer.json(), tf.value)
        assert expected, f"no {tf.value} candles to compare"
        sources |= {r["source"] for r in expected}
        for fmt in ("csv", "parquet"):
            for zone in ("ist", "utc"):
                resp = await api.client.get(
                    "/api/export/candles", params={**params, "format": fmt, "tz": zone}
                )
                assert resp.status_code == 200, resp.text
                assert resp.headers["content-type"].startswith(
                    "text/csv" if fmt == "csv" else "application/vnd.apache.parquet"
                )
                table = read_export(resp.content, "candles", zone)  # type: ignore[arg-type]
                assert table.schema == schema("candles", zone)  # type: ignore[arg-type]
                _same(table, expected, zone)
                if fmt == "csv":
                    assert resp.content.splitlines()[0].decode() == ",".join(names("candles"))
    assert {"live", "broker"} <= sources, sources

    # the command line writes the same file
    out = tmp_path / "m1.parquet"
    start, end = RANGES[Timeframe.M1]
    code, _, err = await run_cli(
        tmp_path,
        {"DATABASE_URL": db_dsn, "BROKER": "kite", "KITE_API_KEY": "k"},
        *("export", "candles", "-i", "NSE:RELIANCE", "--interval", "1m", "--from", start.isoformat()),
        *("--to", end.isoformat(), "--format", "parquet", "--tz", "utc", "-o", str(out)),
    )
    assert code == 0, err
    answer = await api.client.get(
        "/api/candles",
        params={
            "instrument": "NSE:RELIANCE",
            "interval": "1m",
            "from": start.isoformat(),
            "to": end.isoformat(),
        },
    )
    _same(read_export(out, "candles", "utc"), _expected(answer.json(), "1m"), "utc")


async def test_tick_export_has_every_stored_tick_with_its_types(api: Api) -> None:
    pool = api.runtime.pool
    iid = int(await pool.fetchval("SELECT id FROM instruments WHERE tradingsymbol = 'RELIANCE'"))
    start, end = DAY.replace(hour=9), DAY.replace(hour=10)
    stored = await pool.fetch(
        "SELECT time, ltp, volume_delta, open_interest, received_at FROM tick_data "
        "WHERE instrument_id = $1 AND time >= $2 AND time < $3 ORDER BY time",
        iid,
        start,
        end,
    )
    assert stored
    for fmt in ("csv", "parquet"):
        resp = await api.client.get(
            "/api/export/ticks",
            params={
                "instrument": "NSE:RELIANCE",
                "from": start.isoformat(),
                "to": end.isoformat(),
                "format": fmt,
            },
        )
        assert resp.status_code == 200, resp.text
        table = read_export(resp.content, "ticks", "ist")
        assert table.schema == schema("ticks", "ist")
        got = [
            (r["time"], r["ltp"], r["volume_delta"], r["open_interest"], r["received_at"])
            for r in table.to_pylist()
        ]
        assert got == [tuple(r) for r in stored]


async def test_export_requests_are_checked_before_streaming(api: Api) -> None:
    base = {"from": "2024-03-05T09:15:00", "to": "2024-03-05T15:30:00"}
    unknown = await api.client.get(
        "/api/export/candles", params={**base, "instrument": ["NSE:RELIANCE", "NSE:NOPE", "NSE:NADA"]}
    )
    assert unknown.status_code == 404 and "NSE:NOPE" in unknown.text and "NSE:NADA" in unknown.text
    backwards = await api.client.get(
        "/api/export/ticks", params={"instrument": "NSE:RELIANCE", "from": base["to"], "to": base["from"]}
    )
    assert backwards.status_code == 400 and backwards.json()["code"] == "invalid_range"
    bad_format = await api.client.get(
        "/api/export/candles", params={**base, "instrument": "NSE:RELIANCE", "format": "xlsx"}
    )
    assert bad_format.status_code == 422
