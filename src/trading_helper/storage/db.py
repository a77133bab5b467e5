"""Connections to PostgreSQL, with failures turned into one clear :class:`DatabaseUnavailable`."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from trading_helper.errors import DatabaseUnavailable

_PASSWORD = re.compile(r"(://[^:/@]+:)[^@]*@")


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    return _PASSWORD.sub(r"\1***@", dsn)


def _unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    reason = str(exc).strip() or type(exc).__name__
    return DatabaseUnavailable(f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {reason}")


async def connect(dsn: str, *, timeout_s: float = 10.0) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=timeout_s)
    except (OSError, asyncpg.PostgresError, TimeoutError, asyncpg.InterfaceError) as exc:
        raise _unavailable(dsn, exc) from exc


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=10.0, **kwargs)
    except (OSError, asyncpg.PostgresError, TimeoutError, asyncpg.InterfaceError) as exc:
        raise _unavailable(dsn, exc) from exc
    assert pool is not None
    return pool
