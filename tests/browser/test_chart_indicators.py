"""Studies on the chart page (static/indicators.js) in headless Chromium against the real API:
an overlay and panes draw with the API's values, they follow a live tick, they are remembered per
instrument, and a bad spec is shown, not drawn."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from tests.browser.chart_site import API_TOKEN, ARTIFACTS, Site, open_live
from tests.browser.driver import Browser
from tests.ingest.direct_writer import DirectWriter
from trading_helper.ingest import codec
from trading_helper.models import Tick

STUDIES = "ema:20,vwap,bb:20:2,supertrend:10:3,rsi:14,macd,volume,oi"
SUMMARY = "window.TH_INDICATORS.summary()"


async def api_values(site: Site, params: dict[str, str]) -> dict[str, dict[str, list[float | None]]]:
    async with httpx.AsyncClient(
        base_url=site.url, headers={"Authorization": f"Bearer {API_TOKEN}"}
    ) as client:
        response = await client.get("/api/indicators", params=params)
    assert response.status_code == 200, response.text
    return {s["study"]: s["series"] for s in response.json()["studies"]}


def last_defined(values: list[float | None]) -> float:
    return next(v for v in reversed(values) if v is not None)


async def test_overlays_and_panes_draw_follow_a_tick_and_are_remembered(
    site: Site, db_pool: asyncpg.Pool
) -> None:
    async with Browser() as browser:
        await open_live(browser, site, "1m")
        assert await browser.eval(SUMMARY) == []  # nothing chosen yet for this instrument
        canvases = await browser.eval("document.querySelectorAll('#chart canvas').length")
        await browser.call("type", selector="#studies", text=STUDIES)
        await browser.call("press", key="Enter")
        await browser.wait(f"document.getElementById('chart').dataset.studies === '{STUDIES}'")
        chart = await browser.chart()
        assert chart["studyError"] == "" and int(chart["studyUpdates"]) >= 1
        # the price pane and one pane each for RSI, MACD, volume and OI
        assert chart["studyPanes"] == "5"
        assert await browser.eval("document.querySelectorAll('#chart canvas').length") > canvases
        drawn = {s["spec"]: s for s in await browser.eval(SUMMARY)}
        assert [drawn[s]["pane"] for s in ("ema:20", "vwap", "bb:20:2", "supertrend:10:3")] == [0, 0, 0, 0]
        assert [drawn[s]["pane"] for s in ("rsi:14", "macd:12:26:9", "volume", "oi")] == [1, 2, 3, 4]
        candles = int(chart["candles"])
        for spec in ("ema:20", "vwap", "rsi:14", "volume"):
            out = next(iter(drawn[spec]["outputs"].values()))
            assert out["points"] == candles, spec  # defined on every bar: the warm-up came first
        assert drawn["oi"]["outputs"]["oi"]["points"] == 0  # these ticks carry no open interest
        assert drawn["macd:12:26:9"]["outputs"]["hist"]["pane"] == 2

        # the values drawn are the API's
        params = {
            "instrument": f"id:{site.instrument_id}",
            "interval": "1m",
            "studies": STUDIES,
            "from": chart["lastTime"],
            "to": datetime.now(UTC).isoformat(),
        }
        api = await api_values(site, params)
        assert drawn["ema:20"]["outputs"]["ema"]["last"] == pytest.approx(last_defined(api["ema:20"]["ema"]))
        assert drawn["rsi:14"]["outputs"]["rsi"]["last"] == pytest.approx(last_defined(api["rsi:14"]["rsi"]))
        await browser.screenshot(ARTIFACTS / "chart-indicators.png")

        # a trade far above, stored (as the writer would) and published: the forming bar's values move
        before = drawn["ema:20"]["outputs"]["ema"]["last"]
        updates = int(chart["studyUpdates"])
        now = datetime.now(UTC)
        price = round(site.last_close + 250, 2)
        tick = Tick(site.instrument_id, now, now, price, last_quantity=10, volume=None)
        writer = await DirectWriter.open(db_pool)
        await writer.write([tick])
        await db_pool.execute("CALL refresh_candles()")
        await site.redis.publish(site.channel, codec.encode_ticks([tick]))
        await browser.wait(f"document.getElementById('chart').dataset.lastClose === '{price}'")
        await browser.wait(f"Number(document.getElementById('chart').dataset.studyUpdates) > {updates}")
        moved = {s["spec"]: s for s in await browser.eval(SUMMARY)}
        after = moved["ema:20"]["outputs"]["ema"]["last"]
        assert after > before
        api = await api_values(site, {**params, "to": datetime.now(UTC).isoformat()})
        assert after == pytest.approx(last_defined(api["ema:20"]["ema"]))

        # remembered for this instrument, not for another
        # the page loaded afresh (the same browser context: its localStorage is kept)
        await browser.eval("window.__before = true; setTimeout(() => location.reload(), 10); true")
        await browser.wait("!window.__before && document.getElementById('chart').dataset.ready === 'true'")
        await browser.wait(f"document.getElementById('chart').dataset.studies === '{STUDIES}'")
        await browser.wait("document.getElementById('chart').dataset.studyPanes === '5'")
        assert await browser.eval("document.getElementById('studies').value") == STUDIES
        await browser.call("type", selector="#search", text="chart1")
        await browser.wait("document.querySelectorAll('#results li').length === 1")
        await browser.call("press", key="Enter")
        await browser.wait("document.getElementById('search').value === 'NSE:CHART1'")
        await browser.wait("document.getElementById('chart').dataset.studies === ''")
        assert (await browser.chart())["studyPanes"] == "1"
        assert await browser.errors() == []


async def test_a_bad_spec_is_shown_and_nothing_is_drawn(site: Site) -> None:
    async with Browser() as browser:
        await open_live(browser, site, "5m")
        await browser.call("type", selector="#studies", text="ema:20,foo:3")
        await browser.call("press", key="Enter")
        await browser.wait("document.getElementById('chart').dataset.studyError !== ''")
        chart = await browser.chart()
        assert "unknown study 'foo'" in chart["studyError"] and chart["studyPanes"] == "1"
        assert await browser.eval("document.getElementById('studies').getAttribute('aria-invalid')") == "true"
        assert await browser.eval(SUMMARY) == []
