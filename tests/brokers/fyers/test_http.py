"""Fyers over HTTP against the local fake: login, symbol masters, history, retries, auth errors."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.fakes.fyers_server import FakeFyersServer
from tests.fakes.sink import wait_until
from trading_helper.brokers.fyers.broker import FyersBroker
from trading_helper.brokers.fyers.http import FyersHttp, app_id_hash
from trading_helper.brokers.fyers.instruments import parse_symbol_master
from trading_helper.brokers.fyers.login import login
from trading_helper.brokers.registry import build_broker
from trading_helper.brokers.retry import RateLimiter
from trading_helper.brokers.tokens import load_token, save_token, token_path
from trading_helper.config import Settings
from trading_helper.errors import BrokerUnavailable, LoginRequired, RateLimited, UnknownInstrument
from trading_helper.timeframes import IST, Timeframe


@pytest.fixture
async def fake() -> AsyncIterator[FakeFyersServer]:
    async with FakeFyersServer() as server:
        yield server


def fast_http(settings: Settings, attempts: int = 4) -> FyersHttp:
    return FyersHttp(settings, max_attempts=attempts, backoff_initial_s=0.01, backoff_max_s=0.05)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- login -----------------------------------------------------------------------------------
def test_app_id_hash_is_sha256_of_app_id_colon_secret() -> None:
    assert app_id_hash("ABC-100", "s3cret") == hashlib.sha256(b"ABC-100:s3cret").hexdigest()


async def test_validate_authcode_sends_app_id_hash(fake: FakeFyersServer, tmp_path: Path) -> None:
    settings = fake.settings(tmp_path)
    async with httpx.AsyncClient() as client:
        redirect = await client.get(
            f"{fake.api_url}/api/v3/generate-authcode",
            params={
                "client_id": fake.app_id,
                "redirect_uri": "http://127.0.0.1:1/cb",
                "response_type": "code",
                "state": "x",
            },
        )
    code = parse_qs(urlsplit(redirect.headers["location"]).query)["auth_code"][0]
    http = fast_http(settings)
    try:
        with pytest.raises(LoginRequired, match="invalid app id hash"):
            await http.validate_authcode(code, "wrong-secret")
        token = await http.validate_authcode(code, fake.secret)
    finally:
        await http.aclose()
    assert token == fake.access_token
    assert fake.validate_requests[-1] == {
        "grant_type": "authorization_code",
        "appIdHash": app_id_hash(fake.app_id, fake.secret),
        "code": code,
    }


async def test_login_catches_the_redirect_and_stores_the_token_privately(
    fake: FakeFyersServer, tmp_path: Path
) -> None:
    settings = fake.settings(
        tmp_path / "tokens", FYERS_REDIRECT_URI=f"http://127.0.0.1:{free_port()}/fyers/callback"
    )
    printed: list[str] = []
    task = asyncio.create_task(login(settings, timeout_s=10, echo=printed.append))
    await wait_until(lambda: any("generate-authcode" in line for line in printed))
    url = next(line for line in printed if "generate-authcode" in line)
    async with httpx.AsyncClient(follow_redirects=True) as browser:  # the user's browser
        page = await browser.get(url)
    assert "You can close this tab" in page.text
    path = await task
    assert path == token_path(settings, "fyers")
    assert load_token(settings, "fyers") == fake.access_token
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert all(fake.access_token not in line for line in printed)
    assert fake.access_token[-4:] in printed[-1]  # the redacted form only


async def test_login_with_a_pasted_auth_code(fake: FakeFyersServer, tmp_path: Path) -> None:
    settings = fake.settings(tmp_path)
    async with httpx.AsyncClient() as client:
        redirect = await client.get(
            f"{fake.api_url}/api/v3/generate-authcode",
            params={
                "client_id": fake.app_id,
                "redirect_uri": settings.FYERS_REDIRECT_URI,
                "response_type": "code",
            },
        )
    code = parse_qs(urlsplit(redirect.headers["location"]).query)["auth_code"][0]
    await login(settings, auth_code=code, echo=lambda _line: None)
    assert load_token(settings, "fyers") == fake.access_token
    with pytest.raises(LoginRequired, match="invalid auth code"):  # an auth code works once
        await login(settings, auth_code=code, echo=lambda _line: None)


async def test_login_by_pasting_the_redirect_url_as_in_a_container(
    fake: FakeFyersServer, tmp_path: Path
) -> None:
    """``login fyers --paste``: the login URL is printed, the browser's redirect to an address
    nobody listens on (the container's 127.0.0.1) is pasted back, its state checked."""
    settings = fake.settings(tmp_path, FYERS_REDIRECT_URI=f"http://127.0.0.1:{free_port()}/fyers/callback")
    printed: list[str] = []

    async def browser_then_paste(prompt: str) -> str:
        assert "Paste the redirect URL" in prompt
        url = next(line for line in printed if "generate-authcode" in line)
        async with httpx.AsyncClient() as browser:  # the redirect is not followed: nothing listens there
            redirect = await browser.get(url)
        return redirect.headers["location"]

    path = await login(settings, paste=True, echo=printed.append, read_line=browser_then_paste)
    assert load_token(settings, "fyers") == fake.access_token and path == token_path(settings, "fyers")
    assert printed[0].startswith("Open this URL") and all(fake.access_token not in line for line in printed)

    async def forged(prompt: str) -> str:  # a redirect URL from another login (another state)
        return f"{settings.FYERS_REDIRECT_URI}?s=ok&code=200&auth_code=abc&state=not-this-one"

    with pytest.raises(LoginRequired, match="state does not match"):
        await login(settings, paste=True, echo=lambda _line: None, read_line=forged)
    # a redirect URI this process cannot listen on falls back to pasting (no listener, no error)
    remote = fake.settings(tmp_path, FYERS_REDIRECT_URI="https://example.invalid/fyers/callback")
    asked: list[str] = []

    async def nothing(prompt: str) -> str:
        asked.append(prompt)
        return "  "

    with pytest.raises(LoginRequired, match="no auth_code given"):
        await login(remote, echo=lambda _line: None, read_line=nothing)
    assert asked


# --- instruments -----------------------------------------------------------------------------
async def test_symbol_masters_become_instruments(fake: FakeFyersServer, tmp_path: Path) -> None:
    fake.symbol_masters["NSE_CM"] += "garbage,row\n,,,,,,,,,,,,,,,,,,,,\n"
    broker = build_broker(fake.settings(tmp_path))
    assert isinstance(broker, FyersBroker)
    try:
        instruments = await broker.fetch_instruments()
    finally:
        await broker.aclose()
    by_symbol = {i.broker_ids["fyers"]: i for i in instruments}
    assert set(by_symbol) == {
        "NSE:SBIN-EQ",
        "NSE:NIFTY50-INDEX",
        "NSE:NIFTY24DECFUT",
        "NSE:NIFTY24DEC24000CE",
        "BSE:SBIN-A",
        "MCX:CRUDEOIL25FEBFUT",
    }
    assert broker.http.rejected_rows["NSE_CM"] == 1  # the blank row is skipped, not counted
    sbin = by_symbol["NSE:SBIN-EQ"]
    assert (sbin.exchange, sbin.tradingsymbol, sbin.instrument_type, sbin.name) == (
        "NSE",
        "SBIN",
        "EQ",
        "STATE BANK OF INDIA",
    )
    assert sbin.broker_aux_ids == {"fyers": "10100000003045"} and sbin.expiry is None and sbin.strike is None
    call = by_symbol["NSE:NIFTY24DEC24000CE"]
    assert (call.exchange, call.instrument_type, call.option_type, call.strike) == (
        "NFO",
        "CE",
        "CE",
        24000.0,
    )
    assert (call.expiry, call.lot_size, call.name, call.segment) == (
        date(2024, 12, 26),
        25,
        "NIFTY",
        "NSE_FO",
    )
    fut = by_symbol["NSE:NIFTY24DECFUT"]
    assert (fut.instrument_type, fut.option_type, fut.strike) == ("FUT", None, None)
    assert by_symbol["NSE:NIFTY50-INDEX"].instrument_type == "INDEX"
    assert (by_symbol["MCX:CRUDEOIL25FEBFUT"].exchange, by_symbol["MCX:CRUDEOIL25FEBFUT"].tick_size) == (
        "MCX",
        1.0,
    )


def test_symbol_master_rows_out_of_order_are_counted_not_guessed() -> None:
    shuffled = "NSE:SBIN-EQ,10100000003045,STATE BANK,0,1,0.05,,,,,,,,,,,\n"
    instruments, rejected = parse_symbol_master(shuffled, "NSE_CM", "NSE")
    assert instruments == [] and rejected == 1


# --- history ---------------------------------------------------------------------------------
async def test_history_is_chunked_by_the_allowed_span(fake: FakeFyersServer, tmp_path: Path) -> None:
    save_token(fake.settings(tmp_path), "fyers", fake.access_token)
    broker = FyersBroker(fake.settings(tmp_path))
    start = datetime(2024, 1, 1, tzinfo=IST)
    end = start + timedelta(days=250)
    try:
        hourly = await broker.fetch_history("NSE:SBIN-EQ", Timeframe.H1, start, end)
        daily = await broker.fetch_history(
            "NSE:RELIANCE-EQ", Timeframe.D1, start, start + timedelta(days=800)
        )
    finally:
        await broker.aclose()
    assert fake.history_calls == {"NSE:SBIN-EQ": 3, "NSE:RELIANCE-EQ": 3}
    for request in fake.history_requests:
        limit = 366 if request["resolution"] == "D" else 100
        assert int(request["range_to"]) - int(request["range_from"]) < limit * 86_400
        assert (request["date_format"], request["oi_flag"], request["cont_flag"]) == ("0", "1", "1")
    assert [r["resolution"] for r in fake.history_requests] == ["60"] * 3 + ["D"] * 3
    buckets = [c.bucket for c in hourly]
    assert buckets == sorted(set(buckets)) and all(start <= b < end for b in buckets)
    assert all(c.bucket.utcoffset() == timedelta(hours=5, minutes=30) for c in hourly)
    assert hourly[0].bucket == datetime(2024, 1, 1, 9, 15, tzinfo=IST)

    def weekdays(days: int) -> int:
        return sum((start + timedelta(days=d)).weekday() < 5 for d in range(days))

    assert len(hourly) == weekdays(250) * 7  # the fake's 7 hourly candles a weekday, from 09:15
    assert all(c.open_interest is not None and c.timeframe is Timeframe.H1 for c in hourly)
    assert daily[0].bucket == datetime(2024, 1, 1, tzinfo=IST) and len(daily) == weekdays(800)


async def test_429_is_retried_with_backoff(fake: FakeFyersServer, tmp_path: Path) -> None:
    settings = fake.settings(tmp_path)
    save_token(settings, "fyers", fake.access_token)
    http = fast_http(settings, attempts=4)
    start = datetime(2024, 12, 2, 9, 15, tzinfo=IST)
    try:
        fake.fail_statuses = [429, 429, 503]
        candles = await http.history("NSE:SBIN-EQ", Timeframe.M5, start, start + timedelta(hours=1))
        assert len(candles) == 12 and fake.history_calls["NSE:SBIN-EQ"] == 4
        fake.fail_statuses = [429] * 10
        with pytest.raises(RateLimited):
            await http.history("NSE:TCS-EQ", Timeframe.M5, start, start + timedelta(hours=1))
        assert fake.history_calls["NSE:TCS-EQ"] == 4
        fake.fail_statuses = [500] * 10
        with pytest.raises(BrokerUnavailable):
            await http.history("NSE:INFY-EQ", Timeframe.M1, start, start + timedelta(minutes=5))
    finally:
        await http.aclose()


async def test_network_errors_are_retried_then_reported(tmp_path: Path) -> None:
    settings = Settings(
        FYERS_API_URL=f"http://127.0.0.1:{free_port()}",
        FYERS_APP_ID="A-100",
        FYERS_ACCESS_TOKEN="t",
        TOKEN_DIR=tmp_path,
    )
    http = fast_http(settings, attempts=3)
    try:
        with pytest.raises(BrokerUnavailable, match="ConnectError"):
            await http.history(
                "NSE:SBIN-EQ",
                Timeframe.M1,
                datetime(2024, 12, 2, tzinfo=IST),
                datetime(2024, 12, 3, tzinfo=IST),
            )
    finally:
        await http.aclose()


@pytest.mark.parametrize("status", [401, 200])
async def test_auth_errors_are_login_required_and_never_retried(
    fake: FakeFyersServer, tmp_path: Path, status: int
) -> None:
    settings = fake.settings(tmp_path)
    old = fake.access_token
    save_token(settings, "fyers", old)
    fake.revoke_all_tokens()
    fake.auth_failure_status = status  # 200: only Fyers' code -16 says so
    http = fast_http(settings)
    try:
        with pytest.raises(LoginRequired) as info:
            await http.history(
                "NSE:SBIN-EQ",
                Timeframe.D1,
                datetime(2024, 1, 1, tzinfo=IST),
                datetime(2024, 2, 1, tzinfo=IST),
            )
    finally:
        await http.aclose()
    assert fake.history_calls["NSE:SBIN-EQ"] == 1
    assert old not in str(info.value)


async def test_no_token_is_login_required_without_a_request(fake: FakeFyersServer, tmp_path: Path) -> None:
    http = fast_http(fake.settings(tmp_path))
    try:
        with pytest.raises(LoginRequired, match="login fyers"):
            await http.history(
                "NSE:SBIN-EQ",
                Timeframe.D1,
                datetime(2024, 1, 1, tzinfo=IST),
                datetime(2024, 2, 1, tzinfo=IST),
            )
    finally:
        await http.aclose()
    assert not fake.history_requests


async def test_symbol_tokens_use_the_bare_token_in_batches_of_500(
    fake: FakeFyersServer, tmp_path: Path
) -> None:
    settings = fake.settings(tmp_path)
    save_token(settings, "fyers", fake.access_token)
    fake.invalid_symbols = {"NSE:NOPE-EQ"}
    http = fast_http(settings)
    try:
        symbols = [f"NSE:S{i}-EQ" for i in range(1200)] + ["NSE:NOPE-EQ"]
        valid, invalid = await http.symbol_tokens(symbols)
    finally:
        await http.aclose()
    assert len(valid) == 1200 and invalid == ["NSE:NOPE-EQ"]
    assert fake.symbol_token_auth == [fake.access_token] * 3
    assert all(token.startswith("1010000000") for token in valid.values())


async def test_invalid_symbol_in_history(fake: FakeFyersServer, tmp_path: Path) -> None:
    settings = fake.settings(tmp_path)
    save_token(settings, "fyers", fake.access_token)
    fake.invalid_symbols = {"NSE:XYZ-EQ"}
    http = fast_http(settings)
    try:
        with pytest.raises(UnknownInstrument, match="-300"):
            await http.history(
                "NSE:XYZ-EQ", Timeframe.D1, datetime(2024, 1, 1, tzinfo=IST), datetime(2024, 2, 1, tzinfo=IST)
            )
    finally:
        await http.aclose()
    assert fake.history_calls["NSE:XYZ-EQ"] == 1


async def test_rate_limiter_spaces_requests() -> None:
    limiter = RateLimiter(4, 1.0, (100, 60.0))
    started = time.monotonic()
    for _ in range(6):
        await limiter.acquire()
    assert time.monotonic() - started >= 0.95


async def test_cli_login_fyers_with_auth_code(
    fake: FakeFyersServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from trading_helper.cli import app
    from trading_helper.config import get_settings

    settings = fake.settings(tmp_path)
    for name in ("FYERS_API_URL", "FYERS_APP_ID", "TOKEN_DIR"):
        monkeypatch.setenv(name, str(getattr(settings, name)))
    monkeypatch.setenv("FYERS_SECRET_KEY", fake.secret)
    get_settings.cache_clear()
    async with httpx.AsyncClient() as client:
        redirect = await client.get(
            f"{fake.api_url}/api/v3/generate-authcode",
            params={
                "client_id": fake.app_id,
                "redirect_uri": settings.FYERS_REDIRECT_URI,
                "response_type": "code",
            },
        )
    code = parse_qs(urlsplit(redirect.headers["location"]).query)["auth_code"][0]
    runner = CliRunner()
    try:
        # the command runs its own event loop: give it a thread while the fake serves on ours
        refused = await asyncio.to_thread(runner.invoke, app, ["login", "fyers", "--auth-code", "bogus"])
        done = await asyncio.to_thread(runner.invoke, app, ["login", "fyers", "--auth-code", code])
    finally:
        get_settings.cache_clear()
    assert refused.exit_code == 1 and "invalid auth code" in refused.output
    assert done.exit_code == 0, done.output
    assert load_token(settings, "fyers") == fake.access_token and fake.access_token not in done.output
