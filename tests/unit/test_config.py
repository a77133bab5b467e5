"""Settings: the broker's keys, unknown variables named, FLUSH_INTERVAL_SECONDS in the writer's
unit, TH_CLOCK validated (config.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dotenv import dotenv_values
from pydantic import ValidationError as PydanticValidationError

from trading_helper.brokers.registry import build_broker
from trading_helper.config import Settings, unknown_variables, warn_unknown_variables
from trading_helper.errors import ConfigError

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def test_each_broker_names_the_keys_it_lacks() -> None:
    with pytest.raises(ConfigError, match=r"^BROKER=kite needs KITE_API_KEY"):
        build_broker(Settings(BROKER="kite", KITE_API_KEY=""))
    with pytest.raises(ConfigError, match=r"^BROKER=fyers needs FYERS_APP_ID"):
        Settings(BROKER="fyers", FYERS_APP_ID="  ").require_broker_keys()
    Settings(BROKER="kite", KITE_API_KEY="k").require_broker_keys()
    Settings(BROKER="fyers", FYERS_APP_ID="APP-100").require_broker_keys()
    assert build_broker(Settings(BROKER="sim")).name == "sim"


def test_the_example_file_is_valid_without_keys_and_names_nothing_unknown() -> None:
    settings = Settings(_env_file=str(ENV_EXAMPLE))  # type: ignore[call-arg]
    assert settings.BROKER == "kite" and settings.KITE_API_KEY == ""  # db migrate runs without them
    assert unknown_variables(dotenv_values(ENV_EXAMPLE)) == {}  # compose's own variables are not ours


def test_typos_and_unknown_family_names_are_reported() -> None:
    found = unknown_variables(
        [
            "KITE_API_KYE",
            "DATABSE_URL",
            "FYERS_APPID",
            "TH_CLOK",
            "TH_SPEED",
            "KITE_API_KEY",
            "PATH",
            "POSTGRES_PASSWORD",
            "REDIS_HOST_PORT",
        ]
    )
    assert found == {
        "KITE_API_KYE": "KITE_API_KEY",
        "DATABSE_URL": "DATABASE_URL",
        "FYERS_APPID": "FYERS_APP_ID",
        "TH_CLOK": "TH_CLOCK",
        "TH_SPEED": None,
    }


def test_one_warning_names_the_unknown_variables_of_the_environment_and_dotenv(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("KITE_API_KYE=abc\nBROKER=kite\nPOSTGRES_PASSWORD=x\n")
    with caplog.at_level(logging.WARNING, logger="trading_helper.config"):
        names = warn_unknown_variables({"FYERS_SECRET": "s", "HOME": "/root"}, env_file)
    assert names == ["FYERS_SECRET", "KITE_API_KYE"]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["unknown settings ignored: FYERS_SECRET, KITE_API_KYE (did you mean KITE_API_KEY?)"]
    assert "abc" not in warnings[0]  # names only, never values
    caplog.clear()
    assert warn_unknown_variables({"HOME": "/root"}, tmp_path / "missing.env") == [] and not caplog.records


def test_flush_interval_sets_the_writers_wait_in_milliseconds() -> None:
    assert Settings().flush_interval_ms == 50
    assert Settings(FLUSH_INTERVAL_SECONDS=1).flush_interval_ms == 1000
    assert Settings(FLUSH_INTERVAL_SECONDS=0.0001).flush_interval_ms == 1
    with pytest.raises(PydanticValidationError, match="FLUSH_INTERVAL_SECONDS"):
        Settings(FLUSH_INTERVAL_SECONDS=30)  # the writer's Redis socket timeout is 10 s


def test_th_clock_is_validated_but_a_file_reference_is_left_to_the_clock() -> None:
    assert Settings(TH_CLOCK="2026-11-25T03:30:00+00:00@60").TH_CLOCK == "2026-11-25T03:30:00+00:00@60"
    assert Settings(TH_CLOCK="@/tmp/clock").TH_CLOCK == "@/tmp/clock"
    with pytest.raises(PydanticValidationError, match="TH_CLOCK"):
        Settings(TH_CLOCK="tomorrow@fast")


def test_read_and_direct_database_urls_default_to_database_url_and_are_checked() -> None:
    plain = Settings(DATABASE_URL="postgresql://app@primary:5432/trading_data")
    assert (
        plain.read_database_url == plain.direct_database_url == "postgresql://app@primary:5432/trading_data"
    )
    assert plain.PGBOUNCER is False
    split = Settings(
        DATABASE_URL="postgresql://app:bouncer-pw-1@pgbouncer:6432/trading_data",
        READ_DATABASE_URL="postgresql://app:replica-pw-2@replica:5432/trading_data",
        DIRECT_DATABASE_URL="postgresql://app:direct-pw-3@primary:5432/trading_data",
        PGBOUNCER=True,
    )
    assert split.read_database_url.startswith("postgresql://app:replica-pw-2@replica")
    assert split.direct_database_url.startswith("postgresql://app:direct-pw-3@primary")
    assert {"bouncer-pw-1", "replica-pw-2", "direct-pw-3"} <= set(split.secrets())  # never logged
    behind = Settings(DATABASE_URL="postgresql://app@pgbouncer:6432/trading_data", PGBOUNCER=True)
    with pytest.raises(ConfigError, match="set DIRECT_DATABASE_URL"):
        _ = behind.direct_database_url  # a LISTEN through transaction pooling would hear nothing
    assert behind.read_database_url == behind.DATABASE_URL  # reads are fine through it
    for name in ("READ_DATABASE_URL", "DIRECT_DATABASE_URL"):
        with pytest.raises(PydanticValidationError, match=name):
            Settings(**{name: "mysql://replica/trading_data"})
