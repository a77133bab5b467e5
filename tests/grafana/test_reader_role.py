"""The read-only Grafana role: created once per server even when databases migrate at the same
time, granted per database, and given a password only from the environment (as a SCRAM verifier)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from contextlib import AsyncExitStack
from importlib import resources

import asyncpg
import pytest

from tests.db import fresh_database
from trading_helper.errors import ConfigError
from trading_helper.grafana.role import scram_sha256_verifier, set_reader_password

MIGRATION = (resources.files("trading_helper.storage") / "sql/common/0003_grafana_reader.sql").read_text()


def test_verifier_answers_the_rfc7677_exchange() -> None:
    # RFC 7677 section 3: user "user", password "pencil"; a server holding our verifier must accept
    # the client's proof and produce the server signature the RFC shows.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = scram_sha256_verifier("pencil", salt=salt, iterations=4096)
    head, keys = verifier.split("$", 1)[1].split("$")
    assert head == "4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    auth_message = (
        b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    assert base64.b64encode(hmac.new(server_key, auth_message, hashlib.sha256).digest()) == (
        b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    )


def test_verifier_refuses_passwords_postgres_would_normalise() -> None:
    with pytest.raises(ConfigError):
        scram_sha256_verifier("pässword")
    with pytest.raises(ConfigError):
        scram_sha256_verifier("")


async def test_password_is_stored_as_a_verifier_and_enables_login(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        assert await set_reader_password(conn, "grafana-secret-1")
        row = await conn.fetchrow(
            "SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = 'grafana_reader'"
        )
    assert row["rolcanlogin"] is True
    assert (
        row["rolpassword"].startswith("SCRAM-SHA-256$4096:") and "grafana-secret-1" not in row["rolpassword"]
    )


async def test_grants_cover_what_the_dashboards_read(db_pool: asyncpg.Pool, db_flavour: str) -> None:
    relations = [
        "tick_data",
        "candles_1m",
        "candles_5m",
        "candles_15m",
        "candles_1h",
        "candles_1d",
        "broker_candles",
        "instruments",
        "live_coverage",
        "market_calendars",
        "market_sessions",
        "job_status",
        "quote_updates",
    ]
    if db_flavour == "postgres":  # read by that flavour's candle views (they run as the caller)
        relations.append("candle_watermarks")
    granted = await db_pool.fetch(
        "SELECT r, has_table_privilege('grafana_reader', r, 'SELECT') AS can_select, "
        "has_table_privilege('grafana_reader', r, 'INSERT, UPDATE, DELETE, TRUNCATE') AS can_write "
        "FROM unnest($1::text[]) AS r",
        relations,
    )
    assert all(g["can_select"] and not g["can_write"] for g in granted), granted
    hidden = [
        "ingest_offsets",
        "tick_volume_state",
        "tick_volume_log",
        "subscriptions",
        "instrument_broker_ids",
        "fetch_coverage",
        "market_calendar_loads",
        "schema_migrations",
    ]
    visible = await db_pool.fetch(
        "SELECT r FROM unnest($1::text[]) AS r WHERE has_table_privilege('grafana_reader', r, 'SELECT')",
        hidden,
    )
    assert visible == []


async def test_concurrent_migrations_create_the_role_once(admin_dsn: str) -> None:
    # The migration with a role name of its own, run in three databases at once: the two that lose
    # the race to create the role wait on the winner's commit, then carry on and grant.
    role = f"th_race_{uuid.uuid4().hex[:8]}"
    sql = MIGRATION.replace("grafana_reader", role)
    admin = await asyncpg.connect(admin_dsn)
    try:
        async with AsyncExitStack() as stack:
            dsns = [await stack.enter_async_context(fresh_database(admin_dsn)) for _ in range(3)]
            conns = [await asyncpg.connect(d) for d in dsns]
            try:

                async def run(conn: asyncpg.Connection) -> None:
                    async with conn.transaction():
                        await conn.execute(sql)
                        await asyncio.sleep(0.3)  # hold the new role uncommitted while the others try

                await asyncio.gather(*(run(c) for c in conns))
                for conn in conns:
                    assert await conn.fetchval("SELECT has_table_privilege($1, 'candles_5m', 'SELECT')", role)
                    assert await conn.fetchval(
                        "SELECT has_database_privilege($1, current_database(), 'CONNECT')", role
                    )
            finally:
                for conn in conns:
                    await conn.close()
        assert await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", role) == 1
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
