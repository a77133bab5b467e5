"""Versioned, idempotent schema migrations for both flavours.

SQL lives in ``sql/<flavour>/NNNN_<name>.sql`` with flavour ``common``, ``postgres`` or
``timescale``. Version N is ``common/NNNN_*`` followed by the flavour's ``NNNN_*``, applied in one
transaction and recorded in ``schema_migrations``. The flavour is chosen once, when the database
is empty: TimescaleDB when the extension is available, plain PostgreSQL otherwise; it is then
read back from ``schema_migrations``, so an upgrade never switches flavour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

import asyncpg

from trading_helper.errors import MigrationError, StorageError
from trading_helper.storage.db import connect

Flavour = Literal["postgres", "timescale"]
FLAVOURS: tuple[Flavour, ...] = ("postgres", "timescale")
_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 7_316_001  # pg_advisory_lock key: one migrator at a time


@dataclass(slots=True)
class Migration:
    version: int
    files: list[tuple[str, str]]  # (path label, sql)


@dataclass(slots=True)
class MigrationReport:
    flavour: Flavour
    version: int
    applied: list[str] = field(default_factory=list)


def load_migrations(flavour: Flavour) -> list[Migration]:
    root = resources.files("trading_helper.storage") / "sql"
    by_version: dict[int, list[tuple[str, str]]] = {}
    for folder in ("common", flavour):
        entries = sorted((p for p in (root / folder).iterdir() if _FILE.match(p.name)), key=lambda p: p.name)
        for path in entries:
            match = _FILE.match(path.name)
            assert match is not None
            by_version.setdefault(int(match.group(1)), []).append((f"{folder}/{path.name}", path.read_text()))
    return [Migration(v, files) for v, files in sorted(by_version.items())]


async def _detect_flavour(conn: asyncpg.Connection) -> Flavour:
    recorded = await conn.fetchval("SELECT flavour FROM schema_migrations ORDER BY version DESC LIMIT 1")
    if recorded in FLAVOURS:
        return recorded
    available = await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return "timescale" if available else "postgres"


async def migrate(dsn: str, *, flavour: Flavour | None = None, target: int | None = None,
                  reader_password: str | None = None) -> MigrationReport:
    """Bring the database at ``dsn`` to the newest schema version (or ``target``); running it twice
    changes nothing, and a database at an older version gets only the versions it lacks.

    ``reader_password`` (GRAFANA_DB_PASSWORD) lets the read-only ``grafana_reader`` role log in.
    """
    conn = await connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   flavour    text NOT NULL,
                   files      text[] NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        detected = await _detect_flavour(conn)
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
        if flavour is not None and current and detected != flavour:
            raise MigrationError(f"database already has the {detected} schema; cannot switch to {flavour}")
        chosen: Flavour = flavour or detected
        report = MigrationReport(flavour=chosen, version=current)
        if chosen == "timescale":
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        for migration in load_migrations(chosen):
            if migration.version <= current or (target is not None and migration.version > target):
                continue
            async with conn.transaction():
                for label, sql in migration.files:
                    try:
                        await conn.execute(sql)
                    except asyncpg.PostgresError as exc:
                        raise MigrationError(f"migration {label} failed: {exc}") from exc
                await conn.execute(
                    "INSERT INTO schema_migrations (version, flavour, files) VALUES ($1, $2, $3)",
                    migration.version, chosen, [label for label, _ in migration.files],
                )
            report.applied.extend(label for label, _ in migration.files)
            report.version = migration.version
        if reader_password:
            from trading_helper.grafana.role import set_reader_password

            await set_reader_password(conn, reader_password)
        return report
    except asyncpg.PostgresError as exc:
        raise StorageError(f"migration failed: {exc}") from exc
    finally:
        await conn.close()


async def current_flavour(conn: asyncpg.Connection) -> Flavour:
    value = await conn.fetchval("SELECT flavour FROM schema_migrations ORDER BY version DESC LIMIT 1")
    if value not in FLAVOURS:
        raise StorageError("the database has no Trading Helper schema: run `trading-helper db migrate`")
    return value
