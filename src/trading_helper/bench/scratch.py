"""Throwaway databases and Redis keys for benchmarks, removed afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

from trading_helper.storage import sql_server
from trading_helper.storage.db import connect
from trading_helper.storage.migrate import migrate


def _with_db(dsn: str, name: str) -> str:
    p = urlsplit(dsn)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


@asynccontextmanager
async def scratch_database(dsn: str, prefix: str = "th_bench") -> AsyncIterator[str]:
    """A migrated database named ``<prefix>_<random>`` on the server of ``dsn``, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await connect(_with_db(dsn, "postgres"))
    try:
        await admin.execute(sql_server.create_database(name))
    finally:
        await admin.close()
    url = _with_db(dsn, name)
    try:
        await migrate(url)
        yield url
    finally:
        admin = await connect(_with_db(dsn, "postgres"))
        try:
            await admin.execute(sql_server.drop_database(name))
        finally:
            await admin.close()
