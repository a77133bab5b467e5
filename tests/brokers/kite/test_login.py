"""The Kite login flow and ``trading-helper login kite`` against the local fake Kite."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.kite_server import FakeKiteServer
from trading_helper.brokers.kite.login import extract_request_token, run_login, wait_for_request_token
from trading_helper.brokers.tokens import load_token, token_path
from trading_helper.errors import ConfigError, LoginRequired


@pytest.fixture
async def kite() -> AsyncIterator[FakeKiteServer]:
    async with FakeKiteServer(access_token="issued_access_token_0123456789") as server:
        yield server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_extract_request_token() -> None:
    assert extract_request_token("  abc123 \n") == "abc123"
    url = "http://127.0.0.1:5000/kite?action=login&type=login&status=success&request_token=xyz789"
    assert extract_request_token(url) == "xyz789"


async def test_login_with_a_pasted_request_token(kite: FakeKiteServer, tmp_path: Path) -> None:
    settings = kite.settings(tmp_path / "tokens")
    lines: list[str] = []
    path = await run_login(settings, request_token=kite.request_token, echo=lines.append)
    assert path == token_path(settings, "kite")
    assert load_token(settings, "kite") == kite.access_token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not any("Open this URL" in line or kite.login_url in line for line in lines)  # already logged in
    assert all(kite.access_token not in line for line in lines)
    assert "…6789" in lines[-1]  # redacted: the last 4 characters only


async def test_login_through_the_redirect_listener(kite: FakeKiteServer, tmp_path: Path) -> None:
    settings = kite.settings(tmp_path)
    port = free_port()
    lines: list[str] = []
    task = asyncio.create_task(run_login(settings, listen_port=port, wait_s=10, echo=lines.append))
    async with httpx.AsyncClient() as browser:
        for _ in range(200):  # until the listener is up
            try:
                probe = await browser.get(f"http://127.0.0.1:{port}/favicon.ico")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.02)
        assert probe.status_code == 400  # no token: keeps waiting
        answer = await browser.get(
            f"http://127.0.0.1:{port}/",
            params={"action": "login", "status": "success", "request_token": kite.request_token},
        )
        assert answer.status_code == 200 and "close this tab" in answer.text
    path = await asyncio.wait_for(task, timeout=10)
    assert path.read_text().strip() == kite.access_token
    assert f"{kite.login_url}?api_key={kite.api_key}&v=3" in lines[0]  # the URL to log in at


async def test_listener_gives_up_after_the_wait(tmp_path: Path) -> None:
    with pytest.raises(LoginRequired, match="no Kite redirect"):
        await wait_for_request_token(free_port(), within_s=0.1)


async def test_a_rejected_request_token_stores_nothing(kite: FakeKiteServer, tmp_path: Path) -> None:
    settings = kite.settings(tmp_path)
    with pytest.raises(LoginRequired):
        await run_login(settings, request_token="used_once_already", echo=lambda _s: None)
    assert not token_path(settings, "kite").exists()


async def test_login_needs_key_and_secret(kite: FakeKiteServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KITE_API_SECRET"):
        await run_login(kite.settings(tmp_path, KITE_API_SECRET=""), request_token="x", echo=lambda _s: None)


async def test_cli_login_kite(kite: FakeKiteServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KITE_", "TOKEN_DIR"))}
    env.update(
        KITE_API_URL=kite.api_url,
        KITE_LOGIN_URL=kite.login_url,
        KITE_API_KEY=kite.api_key,
        KITE_API_SECRET=kite.api_secret,
        TOKEN_DIR=str(tmp_path / "tokens"),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trading_helper.cli",
        "login",
        "kite",
        "--request-token",
        kite.request_token,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    text = out.decode() + err.decode()
    # the request token says the login happened: no "Open this URL" to follow
    assert "Open this URL" not in text and "stored in" in text and kite.access_token not in text
    assert (tmp_path / "tokens" / "kite.token").read_text().strip() == kite.access_token
