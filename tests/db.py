"""Throwaway databases on the test PostgreSQL server, one per test module that asks for one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from trading_helper.storage.migrate import Flavour, migrate


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@asynccontextmanager
async def fresh_database(admin_dsn: str, *, flavour: Flavour | None = "postgres",
                         prefix: str = "th_test") -> AsyncIterator[str]:
    """A new empty database (migrated unless ``flavour`` is None), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(admin_dsn, name)
    try:
        if flavour is not None:
            await migrate(dsn, flavour=flavour)
        yield dsn
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
