"""What a database error means for a caller that writes: reconnect, back off, isolate the rows, or stop.

One table for every writer, by SQLSTATE (PostgreSQL's error codes, appendix A of its manual):

* ``CONNECTION``: the connection is gone or cannot be had (network errors, class 08, 57P01-57P03
  shutdowns and start-ups, asyncpg's interface errors). Retry on a new connection.
* ``RESOURCE``: the server is short of something or a statement was refused for now: class 53
  (53100 disk full, 53200 out of memory, 53300 too many connections), 57014 (cancelled:
  ``pg_cancel_backend`` or ``statement_timeout``), 40001 and 40P01 (serialization, deadlock), 55P03
  (lock not available). Retry with a capped backoff.
* ``ROW``: the data of a row is refused: classes 22 (data exception) and 23 (integrity, e.g. a
  CHECK violation), and asyncpg's client-side encoding error for a value. Isolate the rows.
* ``OTHER``: anything else (a missing table, a permission, a bug): not retried blindly.
"""

from __future__ import annotations

import enum

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base

from trading_helper.errors import (
    DatabaseBusy,
    DatabaseUnavailable,
    QueryFailed,
    QueryTimeout,
    StorageError,
    should_retry,
)
from trading_helper.redact import redact_dsn


class Failure(enum.Enum):
    CONNECTION = "connection"
    RESOURCE = "resource"
    ROW = "row"
    OTHER = "other"


_CONNECTION_STATES = frozenset({"57P01", "57P02", "57P03"})
_CANCELLED = "57014"
_RESOURCE_STATES = frozenset({_CANCELLED, "40001", "40P01", "55P03"})


def sqlstate_of(exc: BaseException) -> str:
    return str(getattr(exc, "sqlstate", "") or "")


def classify(exc: BaseException) -> Failure:
    # asyncpg's client-side DataError (a value it cannot encode) is an InterfaceError: test it first
    if isinstance(exc, asyncpg_base.DataError):
        return Failure.ROW
    if isinstance(
        exc, DatabaseUnavailable | OSError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError
    ):
        return Failure.CONNECTION
    if isinstance(exc, DatabaseBusy):
        return Failure.RESOURCE
    if isinstance(exc, asyncpg.PostgresError):
        state = sqlstate_of(exc)
        if state.startswith("08") or state in _CONNECTION_STATES:
            return Failure.CONNECTION
        if state.startswith("53") or state in _RESOURCE_STATES:
            return Failure.RESOURCE
        if state[:2] in ("22", "23"):
            return Failure.ROW
    return Failure.OTHER


#: what a database call may raise besides the tree's own errors (TimeoutError is an OSError)
DB_FAILURES: tuple[type[BaseException], ...] = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def storage_error(exc: BaseException, what: str) -> StorageError:
    """``exc`` (a database failure) as the tree's error, by :func:`classify`: CONNECTION is
    :class:`DatabaseUnavailable`, RESOURCE :class:`DatabaseBusy` (both retryable; a cancelled
    statement, 57014, is its :class:`QueryTimeout`: ``statement_timeout`` or ``pg_cancel_backend``),
    ROW and OTHER :class:`QueryFailed`. The message starts with ``what`` and never quotes a DSN's password."""
    if isinstance(exc, StorageError):
        return exc
    kind = classify(exc)
    reason = redact_dsn(str(exc).strip()) or type(exc).__name__
    state = sqlstate_of(exc)
    if kind is Failure.CONNECTION:
        return DatabaseUnavailable(f"{what}: {reason}")
    if kind is Failure.RESOURCE:
        busy = QueryTimeout if state == _CANCELLED else DatabaseBusy
        return busy(f"{what} ({state}): {reason}", sqlstate=state)
    return QueryFailed(f"{what} ({state}): {reason}" if state else f"{what}: {reason}", sqlstate=state)


def retryable(exc: BaseException, what: str) -> DatabaseUnavailable | DatabaseBusy | None:
    """``exc`` as the error of the tree a caller retries on, or None when it is not to be retried."""
    error = storage_error(exc, f"{what}, will retry")
    if should_retry(error):
        assert isinstance(error, DatabaseUnavailable | DatabaseBusy)
        return error
    return None
