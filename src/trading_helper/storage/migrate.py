"""Versioned, idempotent schema migrations for both flavours.

SQL lives in ``sql/<flavour>/NNNN_<name>.sql`` with flavour ``common``, ``postgres`` or
``timescale``. Version N is ``common/NNNN_*`` followed by the flavour's ``NNNN_*``, applied in one
transaction and recorded in ``schema_migrations``. The flavour is chosen once, when the database
is empty: TimescaleDB when the extension can actually be created here, plain PostgreSQL otherwise;
it is then read back from ``schema_migrations``, so an upgrade never switches flavour.

"Can be created" is tried, not read from ``pg_available_extensions``: a server with the
TimescaleDB files installed but the library not preloaded lists the extension and then refuses
``CREATE EXTENSION`` ("must be preloaded"). Such a server gets plain PostgreSQL with a warning, or,
with ``require_timescale`` (setting ``TIMESCALEDB_REQUIRED``), a :class:`MigrationError` that
names the one-line fix.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

import asyncpg

from trading_helper.errors import MigrationError, StorageError
from trading_helper.storage import sql_schema
from trading_helper.storage.db import Connection, connect

log = logging.getLogger(__name__)

Flavour = Literal["postgres", "timescale"]
FLAVOURS: tuple[Flavour, ...] = ("postgres", "timescale")
_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 7_316_001  # pg_advisory_lock key: one migrator at a time
PRELOAD_FIX = (
    "add shared_preload_libraries = 'timescaledb' to postgresql.conf (keep any libraries "
    "already listed there) and restart PostgreSQL"
)


@dataclass(slots=True)
class Migration:
    version: int
    files: list[tuple[str, str]]  # (path label, sql)


@dataclass(slots=True)
class MigrationReport:
    flavour: Flavour
    version: int
    applied: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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


class _Probe(Exception):
    """Rolls the trial CREATE EXTENSION back."""


@dataclass(frozen=True, slots=True)
class TimescaleProbe:
    available: bool  # the server lists the extension (its files are installed)
    problem: str | None  # why CREATE EXTENSION fails here; None: it works


async def probe_timescale(conn: Connection) -> TimescaleProbe:
    """Try ``CREATE EXTENSION timescaledb`` in a transaction that is always rolled back."""
    if await conn.fetchval(sql_schema.TIMESCALE_INSTALLED):
        return TimescaleProbe(True, None)
    if not await conn.fetchval(sql_schema.TIMESCALE_AVAILABLE):
        return TimescaleProbe(False, "the TimescaleDB extension is not installed on this server")
    try:
        async with conn.transaction():
            await conn.execute(sql_schema.CREATE_TIMESCALE)
            raise _Probe
    except _Probe:
        return TimescaleProbe(True, None)
    except asyncpg.PostgresError as exc:
        return TimescaleProbe(True, str(exc).strip() or type(exc).__name__)


def choose_flavour(probe: TimescaleProbe, *, require_timescale: bool) -> tuple[Flavour, str | None]:
    """The flavour for an empty database and the warning to give, or MigrationError."""
    if probe.problem is None:
        return "timescale", None
    if probe.available:
        message = f"TimescaleDB is installed but cannot be created ({probe.problem}): {PRELOAD_FIX}"
    else:
        message = (
            f"{probe.problem}: install TimescaleDB (the timescale/timescaledb image, or the "
            "timescaledb package of your distribution) and preload it"
        )
    if require_timescale:
        raise MigrationError(message)
    return "postgres", message + "; using plain PostgreSQL instead"


async def _detect_flavour(
    conn: Connection, dsn: str, *, require_timescale: bool
) -> tuple[Flavour, str | None]:
    recorded = await conn.fetchval(sql_schema.RECORDED_FLAVOUR)
    if recorded in FLAVOURS:
        return recorded, None
    # a session of its own: the migration's session then loads TimescaleDB afresh, as its first act
    probe_conn = await connect(dsn)
    try:
        probe = await probe_timescale(probe_conn)
    finally:
        await probe_conn.close()
    return choose_flavour(probe, require_timescale=require_timescale)


async def migrate(
    dsn: str,
    *,
    flavour: Flavour | None = None,
    target: int | None = None,
    reader_password: str | None = None,
    require_timescale: bool = False,
) -> MigrationReport:
    """Bring the database at ``dsn`` to the newest schema version (or ``target``); running it twice
    changes nothing, and a database at an older version gets only the versions it lacks.

    ``reader_password`` (GRAFANA_DB_PASSWORD) lets the read-only ``grafana_reader`` role log in.
    """
    conn = await connect(dsn)
    try:
        await conn.execute(sql_schema.LOCK_MIGRATIONS, _LOCK_KEY)
        await conn.execute(sql_schema.CREATE_SCHEMA_MIGRATIONS)
        current = await conn.fetchval(sql_schema.CURRENT_VERSION)
        warning: str | None = None
        detected: Flavour | None = None
        if flavour is None or current:
            detected, warning = await _detect_flavour(conn, dsn, require_timescale=require_timescale)
            if flavour is not None and detected != flavour:
                raise MigrationError(
                    f"database already has the {detected} schema; cannot switch to {flavour}"
                )
        chosen = flavour or detected
        assert chosen is not None
        report = MigrationReport(flavour=chosen, version=current)
        if warning and flavour is None:
            log.warning("%s", warning)
            report.warnings.append(warning)
        if chosen == "timescale":
            try:
                await conn.execute(sql_schema.ENSURE_TIMESCALE)
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"cannot create the timescaledb extension ({exc}): {PRELOAD_FIX}"
                ) from exc
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
                    sql_schema.RECORD_MIGRATION,
                    migration.version,
                    chosen,
                    [label for label, _ in migration.files],
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


async def current_flavour(conn: Connection) -> Flavour:
    value = await conn.fetchval(sql_schema.RECORDED_FLAVOUR)
    for flavour in FLAVOURS:
        if value == flavour:
            return flavour
    raise StorageError("the database has no Trading Helper schema: run `trading-helper db migrate`")
