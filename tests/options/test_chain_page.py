"""The chart page's option chain view in headless Chromium over the real API: it opens from the
page, lists the strikes around ATM with calls left and puts right (OI bars, IV, delta, build-up),
follows the live chain on the WebSocket, and a click on a contract charts it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.api.conftest import API_TOKEN, api_redis_url
from tests.api.server import serve
from tests.browser.driver import Browser
from tests.options.market import Market
from trading_helper import clock
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.config import Settings
from trading_helper.timeframes import IST

FORWARD = 24_033.0


@pytest.fixture(scope="module")
async def site(db_pool: asyncpg.Pool, redis_url: str) -> AsyncIterator[tuple[str, Market]]:
    redis = aioredis.from_url(api_redis_url(redis_url))
    key = f"th:quotes:test-options-page:{uuid.uuid4().hex[:8]}"
    market = Market(redis, key, (clock.now().astimezone(IST) + timedelta(days=6)).date())
    async with db_pool.acquire() as conn:
        await market.load(conn)
    settings = Settings(API_TOKEN=API_TOKEN, BROKER="sim")
    app = create_app(Runtime(settings, db_pool, redis), live_channel=f"th:live:optpage:{key}", quotes_key=key)
    try:
        async with serve(app) as url:
            yield url, market
    finally:
        await redis.delete(key)
        await redis.aclose()


async def test_option_chain_view(site: tuple[str, Market], tmp_path: Path) -> None:
    url, market = site
    await market.quote(clock.now(), FORWARD)
    async with Browser() as browser:
        await browser.open(f"{url}/#token={API_TOKEN}")
        await browser.call("click", selector="#options-toggle")
        await browser.wait("document.getElementById('options').dataset.strikes === '31'")
        panel = await browser.eval("Object.assign({}, document.getElementById('options').dataset)")
        assert panel["underlying"] == "NSE:NIFTY 50" and panel["expiry"] == market.expiry.isoformat()
        assert (
            await browser.eval("document.querySelector('#opt-table tr.atm td.strike').textContent") == "24050"
        )
        # calls left, puts right: the first cell of a row is the call's OI, the last the put's
        ce_id = market.ids[f"NIFTY{market.expiry:%y%m%d}24050CE"]
        pe_id = market.ids[f"NIFTY{market.expiry:%y%m%d}24050PE"]
        row = "document.querySelector('#opt-table tr.atm')"
        assert await browser.eval(f"{row}.cells[0].dataset.id") == str(ce_id)
        assert await browser.eval(f"{row}.cells[{row}.cells.length - 1].dataset.id") == str(pe_id)
        summary = await browser.eval("document.getElementById('opt-summary').textContent")
        assert "fwd 24033.00" in summary and "ATM 24050" in summary
        await browser.screenshot(tmp_path / "chain.png")
        # live: new quotes (a higher forward) reach the view without a reload
        await market.quote(clock.now(), FORWARD + 100)
        await browser.wait("document.getElementById('opt-summary').textContent.includes('fwd 24133.00')")
        # a click on the call charts it
        await browser.call("click", selector=f"#opt-table td[data-id='{ce_id}']")
        await browser.wait(f"document.getElementById('chart').dataset.instrument === '{ce_id}'")
        assert await browser.errors() == []
