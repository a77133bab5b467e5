from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import pytest

from tests.db import fresh_database
from tests.storage.test_timescale_engine import QUOTE_UPDATES_COLUMNS, TICK_DATA_COLUMNS
from trading_helper.errors import DatabaseUnavailable, MigrationError
from trading_helper.storage.migrate import (
    TimescaleProbe,
    choose_flavour,
    load_migrations,
    migrate,
    probe_timescale,
)

RELATIONS = [
    "instruments",
    "instrument_broker_ids",
    "subscriptions",
    "broker_candles",
    "live_coverage",
    "fetch_coverage",
    "ingest_offsets",
    "tick_volume_state",
    "tick_volume_log",
    "tick_data",
    "quote_updates",
    "candles_1m",
    "candles_5m",
    "candles_15m",
    "candles_1h",
    "candles_1d",
]


async def test_migrate_twice_changes_nothing(admin_dsn: str) -> None:
    async with fresh_database(admin_dsn, flavour=None) as dsn:
        first = await migrate(dsn)
        assert first.flavour == await server_flavour(admin_dsn)
        assert first.applied[:2] == [
            "common/0001_core.sql",
            f"{first.flavour}/0001_{FIRST[first.flavour]}.sql",
        ]
        conn = await asyncpg.connect(dsn)
        try:
            schema_before = await conn.fetch(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, 2"
            )
            second = await migrate(dsn)
            schema_after = await conn.fetch(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, 2"
            )
            versions = await conn.fetchval("SELECT count(*) FROM schema_migrations")
            present = {
                r[0]
                for r in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            }
        finally:
            await conn.close()
    assert second.applied == [] and second.version == first.version >= 1
    assert schema_before == schema_after
    assert versions == len(load_migrations(first.flavour))  # one row per version (numbers may skip)
    assert set(RELATIONS) <= present


FIRST = {"postgres": "market", "timescale": "market_data"}


async def server_flavour(admin_dsn: str) -> str:
    """What detection must choose on the test server: TimescaleDB only where it can be created."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        probe = await probe_timescale(conn)
    finally:
        await conn.close()
    return "timescale" if probe.problem is None else "postgres"


async def test_detection_tries_the_extension_and_explains_a_missing_preload(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        probe = await probe_timescale(conn)
        left = await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
    finally:
        await conn.close()
    if probe.problem is not None:
        assert left == 0  # the trial CREATE EXTENSION was rolled back (or never possible)
    # installed but not preloaded: what PostgreSQL says then, as seen on a native server
    preload = TimescaleProbe(True, 'extension "timescaledb" must be preloaded')
    flavour, warning = choose_flavour(preload, require_timescale=False)
    assert flavour == "postgres" and warning is not None
    assert "must be preloaded" in warning and "shared_preload_libraries = 'timescaledb'" in warning
    with pytest.raises(MigrationError, match=r"shared_preload_libraries = 'timescaledb'.*restart PostgreSQL"):
        choose_flavour(preload, require_timescale=True)
    with pytest.raises(MigrationError, match="not installed"):
        choose_flavour(
            TimescaleProbe(False, "the TimescaleDB extension is not installed on this server"),
            require_timescale=True,
        )
    assert choose_flavour(TimescaleProbe(True, None), require_timescale=True) == ("timescale", None)


async def test_migrate_without_timescale_warns_or_stops_as_the_setting_says(admin_dsn: str) -> None:
    if await server_flavour(admin_dsn) == "timescale":
        pytest.skip("this server can create TimescaleDB: nothing to fall back from")
    async with fresh_database(admin_dsn, flavour=None) as dsn:
        with pytest.raises(MigrationError, match="TimescaleDB"):
            await migrate(dsn, require_timescale=True)
        report = await migrate(dsn)
        assert report.flavour == "postgres" and report.warnings and "plain PostgreSQL" in report.warnings[0]
        with pytest.raises(MigrationError, match="cannot create the timescaledb extension"):
            async with fresh_database(admin_dsn, flavour=None) as other:
                await migrate(other, flavour="timescale")


async def _schema(dsn: str) -> list[tuple[str, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2"
        )
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


async def test_an_older_database_is_upgraded_in_place(admin_dsn: str) -> None:
    async with fresh_database(admin_dsn, flavour=None) as old, fresh_database(admin_dsn, flavour=None) as new:
        first = await migrate(old, target=1)
        assert first.version == 1
        conn = await asyncpg.connect(old)
        try:
            [iid] = [
                r[0]
                for r in await conn.fetch(
                    "INSERT INTO instruments (exchange, tradingsymbol) VALUES ('NSE', 'KEPT') RETURNING id"
                )
            ]
        finally:
            await conn.close()
        upgraded = await migrate(old)
        latest = await migrate(new)
        assert upgraded.version == latest.version
        assert upgraded.applied == [
            label
            for label in latest.applied
            if not label.startswith(("common/0001", f"{latest.flavour}/0001"))
        ]
        assert await _schema(old) == await _schema(new)
        conn = await asyncpg.connect(old)
        try:
            assert await conn.fetchval("SELECT tradingsymbol FROM instruments WHERE id = $1", iid) == "KEPT"
        finally:
            await conn.close()


async def test_candle_relations_have_the_contract_columns(db_pool: asyncpg.Pool) -> None:
    expected = [
        ("bucket", "timestamp with time zone"),
        ("instrument_id", "integer"),
        ("open", "double precision"),
        ("high", "double precision"),
        ("low", "double precision"),
        ("close", "double precision"),
        ("volume", "bigint"),
        ("open_interest", "bigint"),
        ("tick_count", "bigint"),
    ]
    for tf in ("1m", "5m", "15m", "1h", "1d"):
        rows = await db_pool.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = $1 ORDER BY ordinal_position",
            f"candles_{tf}",
        )
        assert [(r[0], r[1]) for r in rows] == expected, tf


async def test_migrate_against_a_dead_server_raises_one_clear_error() -> None:
    with pytest.raises(
        DatabaseUnavailable, match=r"cannot connect to PostgreSQL at postgresql://u:\*\*\*@127\.0\.0\.1:1/x"
    ):
        await migrate("postgresql://u:secret@127.0.0.1:1/x")


def test_cli_migrate_with_database_down_prints_one_line_without_traceback() -> None:
    env = dict(os.environ, DATABASE_URL="postgresql://u:hunter2@127.0.0.1:1/trading")
    proc = subprocess.run(
        [sys.executable, "-m", "trading_helper.cli", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "cannot connect to PostgreSQL" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "hunter2" not in proc.stderr + proc.stdout


async def test_tick_relations_have_the_columns_of_the_timescale_flavour(db_pool: asyncpg.Pool) -> None:
    for relation, expected in (("tick_data", TICK_DATA_COLUMNS), ("quote_updates", QUOTE_UPDATES_COLUMNS)):
        got = [
            tuple(r)
            for r in await db_pool.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                relation,
            )
        ]
        assert got == expected, relation
