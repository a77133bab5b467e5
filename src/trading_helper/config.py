"""One typed, frozen settings object, read from the environment (and ``.env``).

Variable names follow the specification (``DATABASE_URL``, ``REDIS_URL``, ``BROKER``,
``KITE_API_KEY`` ...); names of our own carry their unit (``_S``, ``_MS``, ``_BYTES``, ``_FRAMES``).
A bad value fails loudly at start with the variable's name; the chosen broker's keys are checked
where the broker is built (:meth:`Settings.require_broker_keys`), so ``db migrate`` runs without
them; an unknown variable of our families (``TH_*``, ``KITE_*``, ``FYERS_*``) or one a letter off
a setting's name (``KITE_API_KYE``), in the environment or ``.env``, is named in a warning.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values  # the .env parser pydantic-settings itself uses (its dependency)
from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from trading_helper import clock, redact
from trading_helper.accounts import (
    ACCOUNT_LIST,
    DEFAULT_ACCOUNT,
    Account,
    account_variables,
    parse_accounts,
)
from trading_helper.errors import ConfigError

log = logging.getLogger(__name__)

ENV_FILE = ".env"
#: prefixes whose every variable must be a setting: ours, and the specification's brokers
_FAMILIES = ("TH_", "KITE_", "FYERS_")
#: the settings each broker cannot work without (access tokens may come from `trading-helper login`)
BROKER_KEYS: dict[str, tuple[str, ...]] = {"kite": ("KITE_API_KEY",), "fyers": ("FYERS_APP_ID",), "sim": ()}


def check_url(value: str, schemes: tuple[str, ...]) -> str:
    """A connection URL whose scheme and ports are right; the message never quotes the password."""
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in schemes or "://" not in value:
        raise ValueError(f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
    if "@" in parts.netloc.rpartition("@")[0]:
        raise ValueError("the user or password holds '@': percent-encode it as %40")
    for host in parts.netloc.rpartition("@")[2].split(","):  # asyncpg takes host1:port1,host2:port2
        _, colon, port = host.rpartition("]")[2].rpartition(":")
        if colon and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"the port {port!r} is not a number from 1 to 65535")
    return value.strip()


class Settings(BaseSettings):
    # extra="ignore": .env also holds docker compose's own variables (POSTGRES_PASSWORD ...);
    # unknown names that look like ours are reported by unknown_variables()
    model_config = SettingsConfigDict(env_file=ENV_FILE, extra="ignore", frozen=True)

    DATABASE_URL: str = "postgresql://postgres@127.0.0.1:5432/trading_data"
    #: a read replica (or any server with the same data) for the API's candle and instrument reads
    #: and Grafana; empty: DATABASE_URL. Writes (backfill, subscriptions ...) always go to DATABASE_URL
    READ_DATABASE_URL: str = ""
    #: PostgreSQL itself, never through pgBouncer's transaction pooling: the LISTEN of subscription
    #: changes and ``db migrate``'s session lock; empty: DATABASE_URL
    DIRECT_DATABASE_URL: str = ""
    #: DATABASE_URL (and READ_DATABASE_URL) point at pgBouncer in transaction pooling: no prepared
    #: statement cache, no startup settings (the API's statement bound is then asyncpg's, client side)
    PGBOUNCER: bool = False
    REDIS_URL: str = "redis://127.0.0.1:6379/0"
    BROKER: Literal["kite", "fyers", "sim"] = "sim"

    KITE_API_KEY: str = ""
    KITE_API_SECRET: SecretStr = SecretStr("")
    KITE_ACCESS_TOKEN: SecretStr = SecretStr("")
    KITE_API_URL: str = "https://api.kite.trade"
    KITE_WS_URL: str = "wss://ws.kite.trade"
    KITE_LOGIN_URL: str = "https://kite.zerodha.com/connect/login"

    #: several Kite accounts: ``a,b`` names KITE_A_API_KEY, KITE_A_API_SECRET, KITE_A_ACCESS_TOKEN,
    #: KITE_B_... (empty: KITE_API_KEY ... are the one account, named ``default``; see accounts.py)
    KITE_ACCOUNTS: str = ""

    FYERS_APP_ID: str = ""
    FYERS_SECRET_KEY: SecretStr = SecretStr("")
    FYERS_ACCESS_TOKEN: SecretStr = SecretStr("")
    FYERS_REDIRECT_URI: str = "http://127.0.0.1:8765/fyers/callback"
    FYERS_API_URL: str = "https://api-t1.fyers.in"
    FYERS_WS_URL: str = "wss://socket.fyers.in/hsm/v1-5/prod"
    #: where Fyers publishes its symbol master CSVs (NSE_CM.csv, NSE_FO.csv ...)
    FYERS_SYMBOL_MASTER_URL: str = "https://public.fyers.in/sym_details"
    #: several Fyers accounts: ``a,b`` names FYERS_A_APP_ID, FYERS_A_SECRET_KEY, FYERS_A_ACCESS_TOKEN ...
    FYERS_ACCOUNTS: str = ""

    #: where ``trading-helper login`` stores access tokens (file mode 0600)
    TOKEN_DIR: Path = Path.home() / ".config" / "trading-helper"

    API_TOKEN: SecretStr = SecretStr("")
    API_HOST: str = "127.0.0.1"
    API_PORT: int = Field(default=8000, ge=1, le=65535)
    CORS_ORIGINS: str = "http://localhost:3000,http://127.0.0.1:3000"
    #: largest request body the API reads (bytes); counted while it arrives, before any parsing
    API_MAX_BODY_BYTES: int = Field(default=1_000_000, ge=1024)
    #: password of the read-only grafana_reader role, set by `db migrate` (empty: it cannot log in)
    GRAFANA_DB_PASSWORD: SecretStr = SecretStr("")

    #: connections of the API's pool (ingest has its own pool: the writer never waits behind reads)
    API_DB_POOL_SIZE: int = Field(default=10, ge=1)
    #: PostgreSQL statement_timeout of the API's connections: a slower query, or a longer lock wait,
    #: is answered 503 ``query_timeout`` (seconds)
    API_STATEMENT_TIMEOUT_S: float = Field(default=5.0, gt=0)
    #: longest an API request waits for a free connection before a 503 ``database_busy`` (seconds)
    API_ACQUIRE_TIMEOUT_S: float = Field(default=2.0, gt=0)
    #: connections of the ingest pool (writer, coverage, housekeeping, subscriptions)
    INGEST_DB_POOL_SIZE: int = Field(default=4, ge=2)
    #: minutes after a trading day's last session ends before ``serve`` reconciles it with the
    #: broker's 1m history (``reconcile/``); 0: never on its own (``trading-helper reconcile`` still does)
    RECONCILE_AFTER_MINUTES: int = Field(default=30, ge=0, le=24 * 60)

    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: largest batch the writer COPYs in one transaction (ticks)
    TICK_BUFFER_SIZE: int = Field(default=10_000, ge=1)
    #: the writer's longest wait for new ticks in one read of the stream (seconds; the
    #: specification's name): a read returns as soon as a tick arrives, so this bounds how long an
    #: idle writer blocks in Redis, not a tick's delay. At most 5 s, below the Redis socket timeout.
    FLUSH_INTERVAL_SECONDS: float = Field(default=0.05, gt=0, le=5.0)
    #: Redis stream holding received frames, and its memory cap (entries)
    TICK_STREAM: str = "th:ticks"
    #: the cluster (``collect`` and ``write`` processes): instruments pinned to an account or one of
    #: its connections, ``TOKEN=ACCOUNT[:CONNECTION],...`` in broker tokens (cluster/plan.py)
    SHARD_PINS: str = ""
    #: seconds a collector's or writer's lease lives without renewal: a standby takes a dead
    #: owner's shard or stream about this long (and a third more) after it died
    LEASE_TTL_S: float = Field(default=5.0, ge=0.5, le=60.0)
    STREAM_MAX_ENTRIES: int = Field(default=2_000_000, ge=1000)
    #: in-memory queue of frames kept while Redis is unreachable
    LOCAL_QUEUE_MAX_FRAMES: int = Field(default=100_000, ge=100)

    #: the annual interest rate of option pricing (Black-76 discounting, parity forward), as a
    #: fraction: 0.10 is what NSE's own option chain uses
    OPTIONS_RATE: float = Field(default=0.10, ge=-0.05, le=1.0)
    #: seconds between the snapshots of each followed option chain (``POST /api/options/subscribe``)
    OPTIONS_SNAPSHOT_INTERVAL_S: float = Field(default=60.0, ge=5.0, le=3600.0)

    SIM_INSTRUMENTS: int = Field(default=200, ge=1)
    SIM_TICKS_PER_SECOND: float = Field(default=200.0, gt=0)

    #: seconds without any frame (heartbeats included) before a broker socket counts as dead
    STALL_TIMEOUT_S: float = Field(default=5.0, gt=0)
    #: seconds between candle refreshes on plain PostgreSQL
    REFRESH_INTERVAL_S: float = Field(default=5.0, gt=0)
    #: seconds between checks of the maintenance jobs (TimescaleDB policies, our rollup/retention);
    #: on TimescaleDB each check also refreshes candle levels that late ticks invalidated
    JOB_CHECK_INTERVAL_S: float = Field(default=30.0, gt=0)
    #: TimescaleDB: when a level's refresh policy failed (or no scheduler runs), refresh it here
    JOB_FALLBACK_REFRESH: bool = True
    #: `db migrate` on a server whose TimescaleDB files are installed but cannot be loaded (not in
    #: shared_preload_libraries): false = use plain PostgreSQL with a warning, true = stop with the fix
    TIMESCALEDB_REQUIRED: bool = False
    #: retention per segment. Cash instruments follow the specification's table (ticks 7 days, 1m 30
    #: days ... 1d forever); futures and options (the permanent F&O archive, migration 0013) keep
    #: their 1m candles forever when this is on, and so stay chartable and exportable after expiry
    ARCHIVE_FO_CANDLES: bool = True
    #: F&O ticks at the 7-day horizon: ``drop`` (as cash), ``keep`` (forever, in tick_archive;
    #: compressed on TimescaleDB) or ``parquet`` (one file per UTC day under ARCHIVE_DIR/ticks/)
    ARCHIVE_FO_TICKS: Literal["drop", "keep", "parquet"] = "drop"
    #: where ARCHIVE_FO_TICKS=parquet writes its files
    ARCHIVE_DIR: Path = Path("var/archive")
    #: a simulated data clock (``clock.py``). Listed here to be documented and validated; the clock
    #: itself reads it from the process environment on the hot path (a value in .env is not used)
    TH_CLOCK: str = ""

    #: most alert rules one installation keeps (Kite allows 200 per user)
    ALERTS_MAX_RULES: int = Field(default=200, ge=1, le=100_000)
    #: HMAC-SHA256 key of the webhook signature header (X-TH-Signature); webhook channels are
    #: refused while it is empty (a receiver could not verify anything)
    ALERT_WEBHOOK_SECRET: SecretStr = SecretStr("")
    #: delivery attempts per trigger and channel, and the cap on the wait between two (seconds)
    ALERT_DELIVERY_ATTEMPTS: int = Field(default=8, ge=1, le=50)
    ALERT_RETRY_MAX_S: float = Field(default=60.0, gt=0)
    #: the Telegram bot that sends alerts (empty: Telegram channels are refused), and the Bot API
    #: base its token is appended to (a local Bot API server or a stand-in in tests)
    TELEGRAM_BOT_TOKEN: SecretStr = SecretStr("")
    TELEGRAM_API_URL: str = "https://api.telegram.org/bot"

    _accounts: dict[str, tuple[Account, ...]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _read_accounts(self) -> Settings:
        """The accounts of each broker, from the variables its ``<BROKER>_ACCOUNTS`` names (read
        from the environment over ``.env``), or its single-account settings as ``default``."""
        values = {**_env_file_values(), **os.environ}
        single = {
            "kite": (self.KITE_API_KEY, self.KITE_API_SECRET, self.KITE_ACCESS_TOKEN),
            "fyers": (self.FYERS_APP_ID, self.FYERS_SECRET_KEY, self.FYERS_ACCESS_TOKEN),
        }
        for broker, list_name in ACCOUNT_LIST.items():
            listed = getattr(self, list_name)
            if listed.strip():
                self._accounts[broker] = parse_accounts(broker, listed, values)
            else:
                key, secret, token = single[broker]
                self._accounts[broker] = (Account(broker, DEFAULT_ACCOUNT, key.strip(), secret, token),)
        return self

    def accounts(self, broker: str | None = None) -> tuple[Account, ...]:
        """The accounts of ``broker`` (default: BROKER); the simulator has one, ``default``."""
        name = broker or self.BROKER
        return self._accounts.get(name, (Account(name, DEFAULT_ACCOUNT, "", SecretStr(""), SecretStr("")),))

    def account(self, name: str, broker: str | None = None) -> Account:
        """One account by name; ConfigError naming the accounts there are."""
        found = [a for a in self.accounts(broker) if a.name == name.strip().lower()]
        if not found:
            known = ", ".join(a.name for a in self.accounts(broker))
            raise ConfigError(f"no {broker or self.BROKER} account named {name!r} (accounts: {known})")
        return found[0]

    def for_account(self, account: Account) -> Settings:
        """These settings as the broker adapter of ``account`` sees them: its key, secret and
        token in the single-account fields, its own token folder (``TOKEN_DIR/<name>``)."""
        update: dict[str, object] = {}
        if account.broker == "kite":
            update = {"KITE_API_KEY": account.key, "KITE_API_SECRET": account.secret}
            update["KITE_ACCESS_TOKEN"] = account.access_token
        elif account.broker == "fyers":
            update = {"FYERS_APP_ID": account.key, "FYERS_SECRET_KEY": account.secret}
            update["FYERS_ACCESS_TOKEN"] = account.access_token
        if not account.is_default:
            update["TOKEN_DIR"] = self.TOKEN_DIR / account.name
        return self.model_copy(update=update)

    @field_validator("DATABASE_URL")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return check_url(value, ("postgresql", "postgres"))

    @field_validator("READ_DATABASE_URL", "DIRECT_DATABASE_URL")
    @classmethod
    def _other_database_url(cls, value: str) -> str:
        return check_url(value, ("postgresql", "postgres")) if value.strip() else ""

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        return check_url(value, ("redis", "rediss", "unix"))

    @field_validator("TH_CLOCK")
    @classmethod
    def _clock(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith("@"):
            try:
                clock.parse_clock(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @property
    def read_database_url(self) -> str:
        """Where the API's reads go: READ_DATABASE_URL, or DATABASE_URL when that is empty."""
        return self.READ_DATABASE_URL or self.DATABASE_URL

    @property
    def direct_database_url(self) -> str:
        """A connection past pgBouncer (LISTEN, session locks): DIRECT_DATABASE_URL, or DATABASE_URL
        when that is not pgBouncer. With PGBOUNCER=true and no DIRECT_DATABASE_URL, a ConfigError:
        through transaction pooling a LISTEN hears nothing and a session lock locks nothing."""
        if self.DIRECT_DATABASE_URL:
            return self.DIRECT_DATABASE_URL
        if self.PGBOUNCER:
            raise ConfigError(
                "PGBOUNCER=true: set DIRECT_DATABASE_URL to PostgreSQL itself (the LISTEN of "
                "subscription changes and db migrate's lock need a session, which transaction "
                "pooling does not keep)"
            )
        return self.DATABASE_URL

    @property
    def flush_interval_ms(self) -> int:
        """``FLUSH_INTERVAL_SECONDS`` as the writer's XREADGROUP block (whole milliseconds, at least 1)."""
        return max(1, round(self.FLUSH_INTERVAL_SECONDS * 1000))

    def require_broker_keys(self) -> None:
        """ConfigError naming every setting the chosen broker needs and lacks."""
        if self.BROKER in ACCOUNT_LIST and getattr(self, ACCOUNT_LIST[self.BROKER]).strip():
            return  # each listed account's key was checked when the settings were read
        missing = [name for name in BROKER_KEYS[self.BROKER] if not _given(getattr(self, name))]
        if missing:
            raise ConfigError(f"BROKER={self.BROKER} needs {' and '.join(missing)} (see .env.example)")

    def secrets(self) -> list[str]:
        """Every secret value this configuration holds (for ``redact.register``)."""
        values = [v.get_secret_value() for v in self.__dict__.values() if isinstance(v, SecretStr)]
        for accounts in self._accounts.values():
            values += [s.get_secret_value() for a in accounts for s in (a.secret, a.access_token)]
        for url in (self.DATABASE_URL, self.READ_DATABASE_URL, self.DIRECT_DATABASE_URL, self.REDIS_URL):
            password = urlsplit(url).password
            if password:
                # and its pieces: a client that misreads an unencoded '@' or ':' quotes only a piece
                values += [password, unquote(password), *re.split(r"[@:]", unquote(password))]
        return values


def _given(value: object) -> bool:
    text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return bool(text.strip())


def _env_file_values() -> dict[str, str]:
    if not Path(ENV_FILE).is_file():
        return {}
    return {k: v for k, v in dotenv_values(ENV_FILE).items() if v is not None}


def unknown_variables(
    names: Iterable[str], values: Mapping[str, str | None] | None = None
) -> dict[str, str | None]:
    """The names that look like settings but are none: any ``TH_``/``KITE_``/``FYERS_`` name that is
    not a setting (nor a variable of an account ``KITE_ACCOUNTS``/``FYERS_ACCOUNTS`` in ``values``
    lists), and any other name one typo away from one. name -> the setting it is closest to."""
    known = set(Settings.model_fields)
    known |= account_variables({k: v for k, v in (values or {}).items() if v is not None})
    found: dict[str, str | None] = {}
    for name in names:
        upper = name.upper()
        if upper in known:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.9)
        if close or upper.startswith(_FAMILIES):
            found[name] = close[0] if close else None
    return found


def warn_unknown_variables(
    environ: Mapping[str, str] | None = None, env_file: str | Path = ENV_FILE
) -> list[str]:
    """Log one warning naming every unknown variable (see :func:`unknown_variables`) of the
    environment and of ``env_file``; returns the names."""
    values: dict[str, str | None] = {}
    if Path(env_file).is_file():
        values.update(dotenv_values(env_file))
    values.update(os.environ if environ is None else environ)
    unknown = unknown_variables(values, values)
    if unknown:
        described = ", ".join(f"{n} (did you mean {m}?)" if m else n for n, m in sorted(unknown.items()))
        log.warning("unknown settings ignored: %s", redact.safe(described))
    return sorted(unknown)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        settings = Settings()
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {redact.redact(problems)}") from None
    redact.register(*settings.secrets())
    warn_unknown_variables()
    return settings
