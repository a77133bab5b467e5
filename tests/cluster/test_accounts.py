"""Several broker accounts per broker in the settings (accounts.py, config.py), their own token
files, and ``trading-helper login kite --account NAME`` against the local fake Kite."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.kite_server import FakeKiteServer
from trading_helper.brokers.tokens import load_token, token_path
from trading_helper.config import Settings, unknown_variables, warn_unknown_variables
from trading_helper.errors import ConfigError


def test_single_account_settings_are_the_default_account(tmp_path: Path) -> None:
    settings = Settings(BROKER="kite", KITE_API_KEY="k1", KITE_API_SECRET="s1", TOKEN_DIR=tmp_path)
    (account,) = settings.accounts()
    assert (account.name, account.key, account.secret.get_secret_value()) == ("default", "k1", "s1")
    own = settings.for_account(account)
    assert own.KITE_API_KEY == "k1" and token_path(own, "kite") == tmp_path / "kite.token"  # as before
    settings.require_broker_keys()


def test_listed_accounts_read_their_own_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KITE_A_API_KEY", "key-a")
    monkeypatch.setenv("KITE_A_API_SECRET", "secret-a-123456")
    monkeypatch.setenv("KITE_B_API_KEY", "key-b")
    monkeypatch.setenv("KITE_B_ACCESS_TOKEN", "token-b-123456")
    settings = Settings(BROKER="kite", KITE_ACCOUNTS="a, B", KITE_API_KEY="", TOKEN_DIR=tmp_path)
    assert [(a.name, a.key) for a in settings.accounts("kite")] == [("a", "key-a"), ("b", "key-b")]
    settings.require_broker_keys()  # the listed accounts stand in for KITE_API_KEY
    b = settings.for_account(settings.account("b"))
    assert b.KITE_API_KEY == "key-b" and b.KITE_ACCESS_TOKEN.get_secret_value() == "token-b-123456"
    assert token_path(b, "kite") == tmp_path / "b" / "kite.token"
    assert load_token(b, "kite") == "token-b-123456"  # no login file yet: the account's variable
    assert {"secret-a-123456", "token-b-123456"} <= set(settings.secrets())  # redacted from logs
    with pytest.raises(ConfigError, match=r"no kite account named 'c' \(accounts: a, b\)"):
        settings.account("c")
    assert [a.name for a in settings.accounts("fyers")] == ["default"]


def test_a_listed_account_without_its_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FYERS_X_APP_ID", "APP-1")
    with pytest.raises(ValueError, match="FYERS_ACCOUNTS names account 'y' but FYERS_Y_APP_ID is not set"):
        Settings(FYERS_ACCOUNTS="x,y")
    with pytest.raises(ValueError, match="listed twice"):
        Settings(FYERS_ACCOUNTS="x,X")
    with pytest.raises(ValueError, match="letters or digits"):
        Settings(FYERS_ACCOUNTS="my_acct")


def test_account_variables_are_known_only_for_listed_accounts(tmp_path: Path) -> None:
    values = {"KITE_ACCOUNTS": "a", "KITE_A_API_KEY": "k", "KITE_A_API_SECRT": "s", "KITE_Z_API_KEY": "z"}
    assert unknown_variables(values, values) == {
        "KITE_A_API_SECRT": "KITE_A_API_SECRET",
        "KITE_Z_API_KEY": "KITE_A_API_KEY",  # an account KITE_ACCOUNTS does not list
    }
    env_file = tmp_path / ".env"
    env_file.write_text("FYERS_ACCOUNTS=p\nFYERS_P_APP_ID=APP-9\n")
    assert warn_unknown_variables({"HOME": "/root"}, env_file) == []


async def test_login_kite_account_stores_that_accounts_token(tmp_path: Path) -> None:
    """The real command in a child process, against the fake Kite serving account b's key."""
    async with FakeKiteServer(
        api_key="key-b", api_secret="secret-b", access_token="issued_token_b_0123456789"
    ) as kite:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "KITE_ACCOUNTS": "a,b",
            "KITE_A_API_KEY": "key-a",
            "KITE_B_API_KEY": "key-b",
            "KITE_B_API_SECRET": "secret-b",
            "KITE_API_URL": kite.api_url,
            "TOKEN_DIR": str(tmp_path / "tokens"),
        }
        args = ["login", "kite", "--account", "b", "--request-token", kite.request_token]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "trading_helper.cli",
            *args,
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out
        assert b"issued_token_b_0123456789" not in out
        assert (tmp_path / "tokens" / "b" / "kite.token").read_text().strip() == kite.access_token
        assert not (tmp_path / "tokens" / "kite.token").exists()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "trading_helper.cli",
            "login",
            "kite",
            "--account",
            "c",
            "--request-token",
            "x",
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 1 and b"no kite account named 'c'" in out, out
