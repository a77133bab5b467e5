"""Instrument search and plain-text references as traders type them: exact symbol, then prefix,
then substring and name; aliases (BANKNIFTY, NIFTY ...); indices and near-month futures first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import asyncpg
import httpx
import pytest

from tests.api.conftest import API_TOKEN
from tests.api.server import serve
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.brokers.registry import build_broker
from trading_helper.config import Settings
from trading_helper.models import Instrument
from trading_helper.storage.instruments import sync_instruments

NEAR, FAR = date(2099, 1, 29), date(2099, 2, 26)


def inst(
    symbol: str, name: str, segment: str, kind: str, exchange: str = "NSE", expiry: date | None = None
) -> Instrument:
    return Instrument(
        exchange=exchange,
        tradingsymbol=symbol,
        name=name,
        segment=segment,
        instrument_type=kind,
        expiry=expiry,
        tick_size=0.05,
    )


MASTER = [
    inst("NIFTYBEES", "NIPPON NIFTY ETF", "NSE", "EQ"),
    inst(f"NIFTY99FEB{25000}CE", "NIFTY", "NFO-OPT", "CE", "NFO", FAR),
    inst("NIFTY99FEBFUT", "NIFTY", "NFO-FUT", "FUT", "NFO", FAR),
    inst("NIFTY99JANFUT", "NIFTY", "NFO-FUT", "FUT", "NFO", NEAR),
    inst("NIFTY 50", "NIFTY 50", "INDICES", "EQ"),
    inst("NIFTY BANK", "NIFTY BANK", "INDICES", "EQ"),
    inst("BANKNIFTY99JANFUT", "BANKNIFTY", "NFO-FUT", "FUT", "NFO", NEAR),
    inst("NIFTY FIN SERVICE", "NIFTY FIN SERVICE", "INDICES", "EQ"),
    inst("SENSEX", "SENSEX", "INDICES", "EQ", "BSE"),
    inst("RELIANCE", "RELIANCE INDUSTRIES", "NSE", "EQ"),
    inst("RELIANCE", "RELIANCE INDUSTRIES", "BSE", "EQ", "BSE"),
    inst("HDFCBANK", "HDFC BANK", "NSE", "EQ"),
]


@pytest.fixture(scope="module")
async def client(db_pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    for n, i in enumerate(MASTER):
        i.broker_ids["sim"] = str(500_000 + n)
    async with db_pool.acquire() as conn:
        await sync_instruments(conn, "sim", MASTER)
    settings = Settings(API_TOKEN=API_TOKEN, BROKER="sim")
    broker = build_broker(settings)
    app = create_app(Runtime(settings, db_pool, broker=broker), live_channel="th:live:search")
    try:
        async with (
            serve(app) as url,
            httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as c,
        ):
            yield c
    finally:
        await broker.aclose()


async def symbols(client: httpx.AsyncClient, q: str) -> list[str]:
    resp = await client.get("/api/instruments", params={"q": q})
    assert resp.status_code == 200, resp.text
    return [f"{i['exchange']}:{i['tradingsymbol']}" for i in resp.json()["items"]]


async def test_exact_then_prefix_then_substring_then_name(client: httpx.AsyncClient) -> None:
    assert await symbols(client, "nifty") == [
        "NSE:NIFTY 50",  # the alias, exactly
        "NSE:NIFTY BANK",
        "NSE:NIFTY FIN SERVICE",  # prefix: indices first
        "NFO:NIFTY99JANFUT",
        "NFO:NIFTY99FEBFUT",  # then futures, near month first
        "NSE:NIFTYBEES",
        "NFO:NIFTY99FEB25000CE",  # then the rest
        "NFO:BANKNIFTY99JANFUT",
    ]  # substring
    assert (await symbols(client, "BANKNIFTY"))[:2] == ["NSE:NIFTY BANK", "NFO:BANKNIFTY99JANFUT"]
    assert await symbols(client, "bank") == ["NFO:BANKNIFTY99JANFUT", "NSE:NIFTY BANK", "NSE:HDFCBANK"]
    assert await symbols(client, "industries") == ["NSE:RELIANCE", "BSE:RELIANCE"]  # by name, NSE first
    assert (await symbols(client, "FINNIFTY"))[0] == "NSE:NIFTY FIN SERVICE"
    assert await symbols(client, "sensex") == ["BSE:SENSEX"]
    empty = (await client.get("/api/instruments", params={"q": "NOSUCHTHING"})).json()
    assert empty["items"] == [] and empty["total"] == 0


async def test_plain_text_references_name_the_best_exact_match(client: httpx.AsyncClient) -> None:
    async def quote_target(ref: str) -> str:
        resp = await client.get(
            "/api/candles",
            params={"instrument": ref, "interval": "1d", "from": "2024-01-01", "to": "2024-01-02"},
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()["instrument"]
        return f"{body['exchange']}:{body['tradingsymbol']}"

    assert await quote_target("BANKNIFTY") == "NSE:NIFTY BANK"
    assert await quote_target("nifty") == "NSE:NIFTY 50"
    assert await quote_target("reliance") == "NSE:RELIANCE"
    assert await quote_target("BSE:RELIANCE") == "BSE:RELIANCE"
    assert await quote_target("500009") == "NSE:RELIANCE"  # the simulator's token
    unknown = await client.get("/api/candles", params={"instrument": "NIFT", "interval": "1d"})
    assert unknown.status_code == 404 and unknown.json()["detail"] == "unknown instrument 'NIFT'"
