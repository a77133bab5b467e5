"""Kite REST client against the local fake Kite (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes.kite_server import IST, FakeKiteServer, history_candles
from trading_helper.brokers.history import history_chunks
from trading_helper.brokers.kite.http import KiteHttpClient, historical_limiter
from trading_helper.brokers.kite.instruments import kite_csv_to_instruments
from trading_helper.brokers.retry import RateLimiter
from trading_helper.brokers.tokens import save_token
from trading_helper.config import Settings
from trading_helper.errors import (
    BrokerProtocolError,
    BrokerUnavailable,
    InvalidRange,
    LoginRequired,
    RateLimited,
)
from trading_helper.timeframes import Timeframe

START = datetime(2024, 1, 1, 9, 15, tzinfo=IST)


@pytest.fixture
async def kite() -> AsyncIterator[FakeKiteServer]:
    async with FakeKiteServer() as server:
        yield server


@pytest.fixture
def settings(kite: FakeKiteServer, tmp_path: Path) -> Settings:
    s = kite.settings(tmp_path)
    save_token(s, "kite", kite.access_token)
    return s


def client(settings: Settings, **kwargs: object) -> KiteHttpClient:
    # tests that are not about the shared 3/s limiter get their own fast one
    kwargs.setdefault("limiter", RateLimiter(1000))
    kwargs.setdefault("backoff_base_s", 0.01)
    return KiteHttpClient(settings, **kwargs)  # type: ignore[arg-type]


async def test_session_exchange_sends_the_sha256_checksum(kite: FakeKiteServer, tmp_path: Path) -> None:
    settings = kite.settings(tmp_path)  # no token stored yet: the exchange needs none
    async with client(settings) as api:
        session = await api.create_session(kite.request_token)
    assert session.access_token == kite.access_token and session.user_id == "AB1234"
    assert kite.access_token not in repr(session)
    form = kite.session_requests[0]
    want = hashlib.sha256(f"{kite.api_key}{kite.request_token}{kite.api_secret}".encode()).hexdigest()
    assert form == {"api_key": kite.api_key, "request_token": kite.request_token, "checksum": want}


async def test_session_exchange_with_a_used_request_token_is_login_required(
    kite: FakeKiteServer, settings: Settings
) -> None:
    async with client(settings) as api:
        with pytest.raises(LoginRequired, match="request token rejected"):
            await api.create_session("stale")
    assert len(kite.session_requests) == 1  # single-use token: never retried


@pytest.mark.parametrize("gzip_mode", ["content-encoding", "body"])
async def test_instruments_master(kite: FakeKiteServer, settings: Settings, gzip_mode: str) -> None:
    kite.instruments_gzip = gzip_mode
    async with client(settings) as api:
        instruments = await api.instruments()
    headers = kite.rest_headers[-1]
    assert headers["x-kite-version"] == "3"
    assert headers["authorization"] == f"token {kite.api_key}:{kite.access_token}"
    by_symbol = {i.tradingsymbol: i for i in instruments}
    assert len(instruments) == 4
    reliance = by_symbol["RELIANCE"]
    assert reliance.broker_ids == {"kite": "738561"} and reliance.broker_aux_ids == {"kite": "2885"}
    assert (reliance.exchange, reliance.segment, reliance.expiry, reliance.strike, reliance.option_type) == (
        "NSE",
        "NSE",
        None,
        None,
        None,
    )
    option = by_symbol["NIFTY24JAN21500CE"]
    assert (option.expiry, option.strike, option.option_type, option.lot_size, option.tick_size) == (
        date(2024, 1, 25),
        21500.0,
        "CE",
        50,
        0.05,
    )
    assert by_symbol["USDINR24JANFUT"].tick_size == 0.0025


def test_instrument_csv_skips_bad_rows_and_refuses_missing_columns() -> None:
    header = (
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,"
        "lot_size,instrument_type,segment,exchange\n"
    )
    text = (
        header
        + '738561,2885,RELIANCE,"RELIANCE, IND",0,,0,0.05,1,EQ,NSE,NSE\nxx,1,BAD,,0,,0,0.05,1,EQ,NSE,NSE\n'
    )
    [only] = kite_csv_to_instruments(text)
    assert only.name == "RELIANCE, IND"
    with pytest.raises(BrokerProtocolError, match="missing columns"):
        kite_csv_to_instruments("instrument_token,tradingsymbol\n1,X\n")


def test_history_chunks_cover_the_range_without_overlap() -> None:
    end = START + timedelta(days=150)
    chunks = history_chunks(START, end, timedelta(days=60))
    assert chunks == [
        (START, START + timedelta(days=60)),
        (START + timedelta(days=60), START + timedelta(days=120)),
        (START + timedelta(days=120), end),
    ]


async def test_history_is_split_by_the_interval_span(kite: FakeKiteServer, settings: Settings) -> None:
    end = START + timedelta(days=150)
    async with client(settings) as api:
        candles = await api.historical("738561", Timeframe.M1, START, end)
    assert kite.history_calls[("738561", "minute")] == 3
    for req in kite.history_requests:  # the fake refuses spans over 60 days, so each chunk fits
        assert req.end - req.start < timedelta(days=60) and req.oi == "1"
    expected = history_candles("738561", "minute", START, end - timedelta(seconds=1))
    assert len(candles) == len(expected) > 0
    assert [c.bucket for c in candles] == sorted({c.bucket for c in candles})
    assert all(START <= c.bucket < end and c.timeframe is Timeframe.M1 for c in candles)
    first = candles[0]
    assert first.bucket == datetime(2024, 1, 1, 9, 15, tzinfo=IST) and first.bucket.utcoffset() == timedelta(
        hours=5, minutes=30
    )
    assert [first.open, first.high, first.low, first.close, first.volume, first.open_interest] == expected[0][
        1:
    ]


@pytest.mark.parametrize(
    ("timeframe", "interval", "days", "calls"),
    [
        (Timeframe.M5, "5minute", 250, 3),
        (Timeframe.M15, "15minute", 250, 2),
        (Timeframe.H1, "60minute", 401, 2),
        (Timeframe.D1, "day", 2001, 2),
    ],
)
async def test_history_span_per_interval(
    kite: FakeKiteServer, settings: Settings, timeframe: Timeframe, interval: str, days: int, calls: int
) -> None:
    async with client(settings) as api:
        candles = await api.historical("5633", timeframe, START, START + timedelta(days=days))
    assert kite.history_calls[("5633", interval)] == calls and candles


async def test_429_is_retried_with_backoff_then_succeeds(kite: FakeKiteServer, settings: Settings) -> None:
    kite.history_failures = [429, 429]
    async with client(settings) as api:
        candles = await api.historical("738561", Timeframe.H1, START, START + timedelta(days=1))
    assert len(candles) == 7 and kite.history_calls[("738561", "60minute")] == 3


async def test_429_every_time_raises_rate_limited(kite: FakeKiteServer, settings: Settings) -> None:
    kite.history_failures = [429] * 10
    async with client(settings, max_attempts=3) as api:
        with pytest.raises(RateLimited):
            await api.historical("738561", Timeframe.H1, START, START + timedelta(days=1))
    assert kite.history_calls[("738561", "60minute")] == 3


async def test_5xx_and_dropped_sockets_are_retried(kite: FakeKiteServer, settings: Settings) -> None:
    kite.history_failures = [503, 0, 500]
    midnight = START.replace(hour=0, minute=0)  # day buckets are labelled 00:00 IST
    async with client(settings) as api:
        candles = await api.historical("738561", Timeframe.D1, midnight, midnight + timedelta(days=7))
    assert [c.bucket.date() for c in candles] == [date(2024, 1, d) for d in (1, 2, 3, 4, 5)]
    kite.history_failures = [502] * 5
    async with client(settings, max_attempts=2) as api:
        with pytest.raises(BrokerUnavailable):
            await api.historical("738561", Timeframe.D1, START, START + timedelta(days=7))


async def test_expired_token_is_login_required_and_never_retried(
    kite: FakeKiteServer, settings: Settings
) -> None:
    old = kite.access_token
    kite.expire_token()
    async with client(settings) as api:
        with pytest.raises(LoginRequired) as info:
            await api.historical("738561", Timeframe.M1, START, START + timedelta(days=1))
    assert kite.history_calls[("738561", "minute")] == 0  # refused at the door, counted once in rest_headers
    assert len(kite.rest_headers) == 1
    assert old not in str(info.value) and "trading-helper login kite" in str(info.value)


async def test_a_new_login_reaches_a_running_client(kite: FakeKiteServer, settings: Settings) -> None:
    async with client(settings) as api:
        kite.expire_token("morning_token")
        with pytest.raises(LoginRequired):
            await api.instruments()
        save_token(settings, "kite", "morning_token")
        assert len(await api.instruments()) == 4


async def test_without_any_token_no_request_is_made(kite: FakeKiteServer, tmp_path: Path) -> None:
    async with client(kite.settings(tmp_path)) as api:
        with pytest.raises(LoginRequired, match="no Kite access token"):
            await api.instruments()
    assert kite.rest_headers == []


async def test_bad_ranges(settings: Settings) -> None:
    async with client(settings) as api:
        with pytest.raises(InvalidRange):
            await api.historical("1", Timeframe.M1, START, START)
        with pytest.raises(InvalidRange):
            await api.historical("1", Timeframe.M1, datetime(2024, 1, 1), datetime(2024, 1, 2))


async def test_unreachable_server_is_broker_unavailable(tmp_path: Path) -> None:
    async with FakeKiteServer() as kite:
        settings = kite.settings(tmp_path)
    save_token(settings, "kite", "x" * 20)  # the fake is gone now: its port refuses connections
    async with client(settings, max_attempts=2) as api:
        with pytest.raises(BrokerUnavailable, match="network error"):
            await api.instruments()


async def test_the_historical_limiter_is_shared_per_api_key(kite: FakeKiteServer, settings: Settings) -> None:
    assert historical_limiter(settings.KITE_API_KEY) is historical_limiter(settings.KITE_API_KEY)
    limiter = RateLimiter(3, 1.0)  # a fresh one so other tests' calls do not count
    first, second = client(settings, limiter=limiter), client(settings, limiter=limiter)
    began = time.monotonic()
    try:
        for api in (first, second, first, second):
            await api.historical("738561", Timeframe.D1, START, START + timedelta(days=2))
    finally:
        await first.aclose()
        await second.aclose()
    assert time.monotonic() - began >= 0.95  # the 4th call waited for the window
    times = kite.history_times
    assert all(times[i + 3] - times[i] >= 0.95 for i in range(len(times) - 3))
