"""Throwaway databases on the test PostgreSQL server, one per test module that asks for one.

Their schema flavour follows the server, as ``db migrate`` chooses it (TimescaleDB when the
extension can be created there, plain PostgreSQL otherwise), unless ``TEST_DB_FLAVOUR`` names one
(``postgres`` or ``timescale``): on a TimescaleDB server both can be tested.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from trading_helper.storage.migrate import FLAVOURS, Flavour, migrate

#: "server": the flavour `db migrate` would choose on the test server
SERVER = "server"


def wanted_flavour() -> Flavour | None:
    """TEST_DB_FLAVOUR (postgres / timescale), or None: follow the server."""
    value = os.environ.get("TEST_DB_FLAVOUR", "").strip().lower()
    if not value:
        return None
    if value not in FLAVOURS:
        raise ValueError(f"TEST_DB_FLAVOUR={value!r}: use postgres or timescale (or leave it unset)")
    return value  # type: ignore[return-value]


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@asynccontextmanager
async def fresh_database(
    admin_dsn: str, *, flavour: Flavour | str | None = SERVER, prefix: str = "th_test"
) -> AsyncIterator[str]:
    """A new empty database, dropped afterwards: migrated to ``flavour`` (default: the test
    flavour, see the module docstring), or left empty when ``flavour`` is None."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(admin_dsn, name)
    try:
        if flavour == SERVER:
            await migrate(dsn, flavour=wanted_flavour())
        elif flavour is not None:
            await migrate(dsn, flavour=flavour)  # type: ignore[arg-type]
        yield dsn
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
