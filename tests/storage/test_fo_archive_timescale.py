"""The permanent F&O archive on TimescaleDB (migration 0013), on a real engine (PGlite +
TimescaleDB in Node: tests/timescale/): a contract's candles and ticks 40 days old, archived by
apply_retention(), survive the real retention policies (CALL run_job), which drop the chunks of
tick_data and of the 1m aggregate; a share beside it loses its 1m candles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.timescale.engine import LEVELS, TimescaleEngine, tick_row


def _series(engine: TimescaleEngine, iid: int, start: datetime) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for tf in ("1m", "5m", "15m", "1h"):
        out[tf] = engine.fetch(
            "SELECT * FROM read_candles($1, $2, $3, $4)",
            iid,
            tf,
            start - timedelta(hours=1),
            start + timedelta(hours=2),
        )
    return out


def _run_retention_jobs(engine: TimescaleEngine) -> None:
    for (job,) in engine.query(
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name IN ('policy_retention', 'policy_compression')"
    ):
        engine.query(f"CALL run_job({int(job)})")


def test_archived_contracts_survive_the_retention_policies(timescale_engine: TimescaleEngine) -> None:
    engine = timescale_engine
    engine.reset()
    engine.query("UPDATE archive_policy SET candles = true, ticks = 'keep'")
    fut, cash = (
        engine.query(
            "INSERT INTO instruments (exchange, tradingsymbol, instrument_type, expiry, expired) "
            "VALUES ($1, $2, $3, now()::date - 30, $4) RETURNING id",
            exchange,
            symbol,
            kind,
            kind == "FUT",
        )[0][0]
        for exchange, symbol, kind in (("NFO", "ARCHTSFUT", "FUT"), ("NSE", "ARCHTSEQ", "EQ"))
    )
    now = datetime.fromisoformat(engine.query("SELECT now()")[0][0]).astimezone(UTC)
    start = (now - timedelta(days=40)).replace(minute=0, second=0, microsecond=0)
    rows = [
        tick_row(
            start + timedelta(seconds=7 * k),
            iid,
            100.0 + (k % 13) * 0.05 + n,
            1 + k % 3,
            k * 10 if k % 4 else None,
        )
        for n, iid in enumerate((fut, cash))
        for k in range(300)
    ]
    assert engine.load(rows) == len(rows)
    for iid in (fut, cash):
        engine.query(
            "INSERT INTO live_coverage (instrument_id, broker, period, open) VALUES ($1, 'sim', tstzrange($2, $3), false)",
            iid,
            start.isoformat(),
            (start + timedelta(hours=1)).isoformat(),
        )
    engine.refresh(start - timedelta(days=1), start + timedelta(days=2), LEVELS)
    before = {iid: _series(engine, iid, start) for iid in (fut, cash)}
    assert all(len(before[iid]["1m"]) == 35 for iid in (fut, cash))
    assert {c["source"] for c in before[fut]["1m"]} == {"live"}

    copied = engine.query("SELECT archive_market_data()")[0][0]
    assert copied == 35 + 300  # the future's 1m candles and ticks; nothing of the share
    engine.query("SELECT apply_retention()")  # the hourly job: archives nothing more, prunes history
    _run_retention_jobs(engine)

    remaining = engine.query(
        "SELECT (SELECT count(*) FROM tick_data), (SELECT count(*) FROM candles_1m WHERE bucket < now() - interval '30 days')"
    )
    assert remaining == [[0, 0]]  # the policies did drop the raw ticks and the old 1m candles
    after = {iid: _series(engine, iid, start) for iid in (fut, cash)}
    assert after[fut] == before[fut]
    assert after[cash]["1m"] == [] and after[cash]["5m"] == before[cash]["5m"]  # 5m: kept 90 days
    assert engine.query(
        "SELECT count(*), min(time) >= $1::timestamptz FROM tick_archive WHERE instrument_id = $2",
        start.isoformat(),
        fut,
    ) == [[300, True]]
    compressed = engine.query(
        "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks WHERE hypertable_name = 'tick_archive'"
    )
    assert compressed == [[True]]  # the archive's old chunks are compressed, still read
    assert engine.query("SELECT count(*) FROM tick_archive WHERE instrument_id = $1 AND ltp > 0", fut) == [
        [300]
    ]
