"""Connections to PostgreSQL, with failures turned into one clear :class:`DatabaseUnavailable`."""

from __future__ import annotations

from typing import Any

import asyncpg

from trading_helper.errors import ConfigError, DatabaseUnavailable
from trading_helper.redact import redact_dsn


def _invalid(dsn: str, exc: BaseException) -> ConfigError:
    """asyncpg refuses a malformed DSN with a bare ValueError (a non-numeric port ...)."""
    return ConfigError(f"DATABASE_URL is not a valid PostgreSQL DSN ({redact_dsn(dsn)}): {redact_dsn(str(exc))} "
                       "(percent-encode '@', ':' and '/' in a password)")


def _unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    reason = redact_dsn(str(exc).strip()) or type(exc).__name__
    return DatabaseUnavailable(f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {reason}")


async def connect(dsn: str, *, timeout_s: float = 10.0) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=timeout_s)
    except (ValueError, TypeError) as exc:
        raise _invalid(dsn, exc) from exc
    except (OSError, asyncpg.PostgresError, TimeoutError, asyncpg.InterfaceError) as exc:
        raise _unavailable(dsn, exc) from exc


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=10.0, **kwargs)
    except (ValueError, TypeError) as exc:
        raise _invalid(dsn, exc) from exc
    except (OSError, asyncpg.PostgresError, TimeoutError, asyncpg.InterfaceError) as exc:
        raise _unavailable(dsn, exc) from exc
    assert pool is not None
    return pool
