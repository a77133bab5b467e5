"""Connections to PostgreSQL, their types (:data:`Connection`, and :class:`Statements` for code
that only runs statements), and the one mapping of database failures to the error tree
(:func:`db_errors`): every caller outside the tick write path meets only ``StorageError``s.

A process keeps two pools (``serve``): one for ingest (writer, coverage, housekeeping) and one for
the API, so the writer never waits behind API reads. The API's pool bounds both waits a request
can meet: its connections carry a ``statement_timeout`` (a query, or a lock wait, past it fails
with ``QueryCanceledError``, mapped to :class:`QueryTimeout`) and acquiring a connection has a
timeout (:class:`DatabaseBusy`). Pools may start with the database down (``init_size`` 0): they
connect on first use.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeAlias

import asyncpg
import asyncpg.pool
from asyncpg.pool import PoolConnectionProxy

from trading_helper.errors import ConfigError, DatabaseBusy, DatabaseUnavailable
from trading_helper.redact import redact_dsn
from trading_helper.storage.sqlstate import DB_FAILURES, storage_error

#: a connection as the code receives it: opened by :func:`connect`, or lent by a pool
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


class Row(Protocol):
    """A result row read by column name: an asyncpg ``Record`` (or a dict, from the tests'
    bridge to the TimescaleDB engine)."""

    def __getitem__(self, key: str, /) -> Any: ...


class Statements(Protocol):
    """What code that only runs statements needs of a connection: any :data:`Connection`, or the
    tests' bridge to the TimescaleDB engine (tests/timescale), which speaks no asyncpg."""

    async def fetch(self, query: str, *args: Any) -> Sequence[Row]: ...

    async def execute(self, query: str, *args: Any) -> str: ...


@contextmanager
def db_errors(what: str) -> Iterator[None]:
    """Raise what the block's database calls raise as the tree's error ``from`` the original
    (:func:`~trading_helper.storage.sqlstate.storage_error`: unavailable, busy, timed out or failed);
    ``what`` starts the message ("cannot list instruments"). The tree's own errors pass."""
    try:
        yield
    except DB_FAILURES as exc:
        raise storage_error(exc, what) from exc


def _invalid(dsn: str, exc: BaseException) -> ConfigError:
    """asyncpg refuses a malformed DSN with a bare ValueError (a non-numeric port ...)."""
    return ConfigError(
        f"DATABASE_URL is not a valid PostgreSQL DSN ({redact_dsn(dsn)}): {redact_dsn(str(exc))} "
        "(percent-encode '@', ':' and '/' in a password)"
    )


def _unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    reason = redact_dsn(str(exc).strip()) or type(exc).__name__
    return DatabaseUnavailable(f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {reason}")


async def connect(dsn: str, *, timeout_s: float = 10.0) -> asyncpg.Connection[asyncpg.Record]:
    try:
        return await asyncpg.connect(dsn, timeout=timeout_s)
    except (ValueError, TypeError) as exc:
        raise _invalid(dsn, exc) from exc
    except DB_FAILURES as exc:
        raise _unavailable(dsn, exc) from exc


class _BoundedAcquire(asyncpg.pool.PoolAcquireContext):  # of asyncpg.Record (the default)
    """``pool.acquire()`` with the pool's acquire timeout, a timeout raised as DatabaseBusy
    (both ``async with pool.acquire()`` and ``conn = await pool.acquire()``)."""

    __slots__ = ()

    def _busy(self, exc: BaseException) -> DatabaseBusy:
        return DatabaseBusy(
            f"no database connection within {self.timeout:g} s (all {self.pool.get_max_size()} "
            f"of the API's connections busy, or the database slow to answer)"
        )

    async def __aenter__(self) -> PoolConnectionProxy[asyncpg.Record]:
        try:
            return await super().__aenter__()
        except TimeoutError as exc:
            raise self._busy(exc) from exc

    def __await__(self) -> Generator[Any, None, PoolConnectionProxy[asyncpg.Record]]:
        try:
            return (yield from super().__await__())
        except TimeoutError as exc:
            raise self._busy(exc) from exc


class BoundedPool(asyncpg.pool.Pool):  # of asyncpg.Record (the default)
    """An asyncpg pool whose ``acquire()`` (and so ``fetch``/``execute`` ... on the pool) waits
    at most ``acquire_timeout_s`` for a connection. asyncpg has a per-call timeout only; this
    gives every caller the same bound without threading it through each one."""

    def __init__(self, *args: Any, acquire_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout_s = acquire_timeout_s

    def acquire(self, *, timeout: float | None = None) -> _BoundedAcquire:
        return _BoundedAcquire(self, self.acquire_timeout_s if timeout is None else timeout)


async def _no_reset(conn: Any) -> None:
    """The release of a pooled connection behind pgBouncer: nothing to reset (see create_pool)."""


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    acquire_timeout_s: float | None = None,
    statement_timeout_s: float | None = None,
    pgbouncer: bool = False,
    **kwargs: Any,
) -> asyncpg.Pool[asyncpg.Record]:
    """A pool on ``dsn``. ``min_size`` 0: nothing connects before the first use (the database may
    be down at start). ``acquire_timeout_s``: the longest wait for a free connection;
    ``statement_timeout_s``: PostgreSQL's ``statement_timeout`` on every connection.

    ``pgbouncer``: ``dsn`` is a pgBouncer in transaction pooling, where consecutive transactions of
    one client connection may run on different server connections. So: no cache of named prepared
    statements (``statement_cache_size=0``: a statement prepared on one server connection is unknown
    on the next), no startup settings (pgBouncer refuses ``statement_timeout`` as a startup
    parameter; the bound is then asyncpg's ``command_timeout``, which cancels the query from the
    client side through pgBouncer) and no reset query on release (``RESET ALL``, ``UNLISTEN *`` ...
    would run on whichever server connection, a round trip for nothing: the code keeps no session
    state, :mod:`tests.storage.test_pgbouncer`)."""
    if pgbouncer:
        kwargs["statement_cache_size"] = 0
        if statement_timeout_s is not None:
            kwargs.setdefault("command_timeout", statement_timeout_s)
        kwargs.setdefault("reset", _no_reset)
    elif statement_timeout_s is not None:
        settings = dict(kwargs.pop("server_settings", None) or {})
        settings["statement_timeout"] = str(max(1, round(statement_timeout_s * 1000)))
        kwargs["server_settings"] = settings
    try:
        if acquire_timeout_s is None:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, timeout=10.0, **kwargs
            )
        else:
            pool = await BoundedPool(
                dsn,
                min_size=min_size,
                init_size=min_size,
                max_size=max_size,
                timeout=10.0,
                max_queries=50_000,
                max_inactive_connection_lifetime=300.0,
                setup=None,
                init=None,
                reset=kwargs.pop("reset", None),
                loop=None,
                connection_class=asyncpg.Connection,
                record_class=asyncpg.Record,
                acquire_timeout_s=acquire_timeout_s,
                **kwargs,
            )
    except (ValueError, TypeError) as exc:
        raise _invalid(dsn, exc) from exc
    except DB_FAILURES as exc:
        raise _unavailable(dsn, exc) from exc
    assert pool is not None
    return pool
