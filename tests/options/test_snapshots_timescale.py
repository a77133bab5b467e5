"""The option snapshot tables on a real TimescaleDB engine (PGlite + TimescaleDB in Node): both are
hypertables of one-day chunks with their retention policy, and the named statements of
storage/sql_options.py write a snapshot and read it back (chain, contracts, series) there as on
plain PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.timescale.engine import TimescaleEngine
from trading_helper.storage import sql_options


def test_snapshot_tables_are_hypertables_with_retention(timescale_engine: TimescaleEngine) -> None:
    engine = timescale_engine
    for table in ("option_chain_snapshots", "option_quote_snapshots"):
        assert engine.query(
            "SELECT column_name, time_interval::text FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = $1",
            table,
        ) == [["as_of", "1 day"]]
        assert engine.query(
            "SELECT config->>'drop_after' FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_retention' AND hypertable_name = $1",
            table,
        ) == [["90 days"]]


def test_snapshot_statements_round_trip(timescale_engine: TimescaleEngine) -> None:
    engine = timescale_engine
    iid = engine.query(
        "INSERT INTO instruments (exchange, tradingsymbol, name, segment, instrument_type) "
        "VALUES ('NSE', 'NIFTY 50', 'NIFTY 50', 'INDICES', 'INDEX') RETURNING id"
    )[0][0]
    as_of = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
    assert engine.query(sql_options.ENSURE_PARTITIONS, as_of.isoformat(), as_of.isoformat()) == [[0]]
    for minute, atm_iv in ((0, 0.131), (1, 0.133)):
        at = (as_of + timedelta(minutes=minute)).isoformat()
        head = {
            "as_of": at,
            "underlying_id": iid,
            "expiry": "2026-12-08",
            "spot": 24010.0,
            "forward": 24033.0,
            "forward_source": "parity",
            "rate": 0.1,
            "time_to_expiry_years": 0.0165,
            "atm_strike": 24050.0,
            "pcr_oi": 0.9,
            "pcr_volume": 1.1,
            "max_pain": 24000.0,
            "atm_iv": atm_iv,
            "straddle": 320.5,
            "future_id": 99,
            "future_instrument": "NIFTY26DECFUT",
            "future_ltp": 24040.0,
            "future_oi": 9_000_000,
            "future_oi_change": None,
            "future_buildup": None,
        }
        engine.fetch(sql_options.INSERT_CHAIN_SNAPSHOT, *[head[c] for c in sql_options.CHAIN_COLUMNS])
        quotes = {
            "as_of": [at, at],
            "underlying_id": [iid, iid],
            "expiry": ["2026-12-08"] * 2,
            "instrument_id": [11, 12],
            "tradingsymbol": ["NIFTY24050CE", "NIFTY24050PE"],
            "strike": [24050.0, 24050.0],
            "option_type": ["CE", "PE"],
            "ltp": [150.0, 170.5],
            "bid": [149.9, None],
            "ask": [150.1, None],
            "iv_price": [150.0, 170.5],
            "oi": [75000, 90000],
            "oi_change": [None, 1500],
            "volume": [1000, 2000],
            "iv": [0.131, None],
            "iv_reason": [None, "no_price"],
            "delta": [0.48, None],
            "gamma": [0.0004, None],
            "theta": [-20.1, None],
            "vega": [12.2, None],
            "buildup": [None, "long_buildup"],
        }
        engine.fetch(sql_options.INSERT_QUOTE_SNAPSHOTS, *[quotes[c] for c in sql_options.QUOTE_COLUMNS])
    # a second write of a minute keeps the first
    engine.fetch(
        sql_options.INSERT_CHAIN_SNAPSHOT,
        *[head[c] if c != "atm_iv" else 9.9 for c in sql_options.CHAIN_COLUMNS],
    )
    later = (as_of + timedelta(minutes=1, seconds=30)).isoformat()
    got = engine.fetch(sql_options.CHAIN_SNAPSHOT_AT, iid, "2026-12-08", later)
    assert len(got) == 1 and got[0]["atm_iv"] == 0.133
    assert datetime.fromisoformat(got[0]["as_of"]) == as_of + timedelta(minutes=1)
    rows = engine.fetch(sql_options.QUOTE_SNAPSHOTS_AT, iid, "2026-12-08", got[0]["as_of"])
    assert [(r["option_type"], r["oi"], r["iv_reason"], r["buildup"]) for r in rows] == [
        ("CE", 75000, None, None),
        ("PE", 90000, "no_price", "long_buildup"),
    ]
    series = engine.fetch(
        sql_options.SERIES_SQL["atm_iv"],
        iid,
        "2026-12-08",
        as_of.isoformat(),
        (as_of + timedelta(hours=1)).isoformat(),
        10,
    )
    assert [s["value"] for s in series] == [0.131, 0.133]
    first = engine.fetch(sql_options.FIRST_SNAPSHOT_IN, iid, "2026-12-08", as_of.isoformat(), later)
    assert datetime.fromisoformat(first[0]["as_of"]) == as_of
    assert engine.query(sql_options.PRUNE_SNAPSHOTS) == [[0]]
