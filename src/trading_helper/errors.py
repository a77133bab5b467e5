"""The one error tree of Trading Helper.

Every error the package raises on purpose derives from :class:`TradingHelperError`;
low-level errors (asyncpg, redis, httpx, websockets) are wrapped with ``raise ... from exc``.
A ``code`` attribute is machine-readable where callers decide on it ("login needed"), and
``retryable`` (read through :func:`should_retry`, the one retry decision) marks the errors worth
another try after a backoff (marked ``retry`` below)::

    TradingHelperError
    ├── ConfigError                  a missing or invalid setting
    ├── ValidationError              bad input from a caller (API, CLI)
    │   ├── InvalidTimeframe         not one of 1m 5m 15m 1h 1d
    │   ├── InvalidRange             from >= to, or a span too long
    │   ├── InvalidReference         not an instrument reference (instruments/refs.py)
    │   ├── InvalidStudy             not a study spec (indicators/studies.py: ema:20, vwap ...)
    │   ├── InvalidAlert             an alert rule that cannot be evaluated (alerts/rules.py)
    │   ├── AlertLimitReached        more alert rules than ALERTS_MAX_RULES
    │   ├── UnknownAlert             no such alert rule
    │   └── UnknownInstrument        no such instrument / broker token
    ├── StorageError                 the database side
    │   ├── DatabaseUnavailable      cannot connect / connection lost: retry
    │   ├── DatabaseBusy             refused for now (disk/memory/connections, cancel, lock), or no
    │   │                            pooled connection free within the acquire timeout: retry
    │   │   └── QueryTimeout         a statement (or its lock wait) ran past statement_timeout
    │   ├── QueryFailed              a statement refused for good (bad row, missing table ...)
    │   └── MigrationError           a migration failed (names the file)
    ├── IngestError                  the tick pipeline
    │   └── BufferUnavailable        Redis cannot be reached (code redis_unavailable): retry
    └── BrokerError                  anything from a broker
        ├── LoginRequired            expired/invalid token (HTTP 403): do not retry
        ├── RateLimited              HTTP 429: retry after backoff
        ├── BrokerUnavailable        network error or HTTP 5xx: retry after backoff
        ├── BrokerProtocolError      an answer we cannot understand
        └── SubscriptionLimitExceeded  more instruments than the broker allows
"""

from __future__ import annotations


class TradingHelperError(Exception):
    """Root of every error raised on purpose by Trading Helper."""

    code: str = "error"
    #: the operation that raised it may succeed when tried again after a backoff
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(TradingHelperError):
    code = "config"


class ValidationError(TradingHelperError):
    """``reference``: the caller's input it is about, when one entry of a list was bad."""

    code = "invalid"

    def __init__(self, message: str, *, reference: str = "", code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.reference = reference


class InvalidTimeframe(ValidationError):
    code = "invalid_timeframe"


class InvalidRange(ValidationError):
    code = "invalid_range"


class InvalidReference(ValidationError):
    """A reference outside the grammar (``"²"``, ``"id:x"``): names the one given."""

    code = "invalid_reference"


class InvalidStudy(ValidationError):
    code = "invalid_study"


class InvalidAlert(ValidationError):
    """A rule that cannot be evaluated; ``reason`` is a machine-readable word (``unknown_field``,
    ``needs_value`` ...) naming what is wrong."""

    code = "invalid_alert"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class AlertLimitReached(ValidationError):
    code = "alert_limit"


class UnknownAlert(ValidationError):
    code = "unknown_alert"


class UnknownInstrument(ValidationError):
    code = "unknown_instrument"


class StorageError(TradingHelperError):
    code = "storage"


class DatabaseUnavailable(StorageError):
    code = "database_unavailable"
    retryable = True


class DatabaseBusy(StorageError):
    """The database refused for now: out of disk, memory or connections (SQLSTATE class 53), a
    cancelled statement (57014), a serialization, deadlock or lock-wait failure (40001, 40P01,
    55P03). Retry after a backoff; ``sqlstate`` says which."""

    code = "database_busy"
    retryable = True

    def __init__(self, message: str, *, sqlstate: str = "") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class QueryFailed(StorageError):
    """The database refused a statement and trying again will not help: a refused row (SQLSTATE
    classes 22 and 23), a missing relation or permission, a bug. ``sqlstate`` says which."""

    code = "database_error"

    def __init__(self, message: str, *, sqlstate: str = "") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class QueryTimeout(DatabaseBusy):
    """A statement, or its wait for a lock, ran past the connection's ``statement_timeout``
    (the API's pool sets one: ``API_STATEMENT_TIMEOUT_S``)."""

    code = "query_timeout"


class MigrationError(StorageError):
    code = "migration_failed"


class IngestError(TradingHelperError):
    code = "ingest"


class OffsetMoved(IngestError):
    """A stream's committed offset is not the one a commit built on: another transaction committed
    entries of this stream meanwhile. The commit is rolled back; the writer reads the offset again
    and goes on from there (nothing is written twice)."""

    code = "offset_moved"


class BufferUnavailable(IngestError):
    code = "redis_unavailable"
    retryable = True


class BrokerError(TradingHelperError):
    code = "broker"


class LoginRequired(BrokerError):
    code = "login_required"


class RateLimited(BrokerError):
    """``retry_after_s``: the broker's Retry-After, when it sent one."""

    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BrokerUnavailable(BrokerError):
    code = "broker_unavailable"
    retryable = True


class BrokerProtocolError(BrokerError):
    code = "broker_protocol"


class SubscriptionLimitExceeded(BrokerError):
    code = "subscription_limit"


def should_retry(error: BaseException) -> bool:
    """True when the operation that raised ``error`` may be retried after a backoff: an error of
    the tree marked ``retryable`` (low-level errors are first mapped to the tree:
    ``storage.db.db_errors``, ``ingest.redisconn.redis_errors``, the brokers' HTTP clients)."""
    return isinstance(error, TradingHelperError) and error.retryable
