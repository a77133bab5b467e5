"""Alerts on the chart page (static/alerts.js) in headless Chromium against the real API and its
alert service: Alt+click on the chart drafts an LTP-crossing rule at the clicked price (above the last close:
crosses above), Create
stores it, the list shows it, a crossing published on the live channel fires it and the page shows
the alert from the WebSocket, its history lists the trigger, and × deletes it."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from tests.browser.chart_site import API_TOKEN, ARTIFACTS, Site, open_live
from tests.browser.driver import Browser
from tests.fakes.sink import wait_until
from trading_helper.ingest import codec
from trading_helper.models import Tick

PANEL = "document.getElementById('alerts').dataset"


async def rules_of(site: Site) -> list[dict[str, object]]:
    async with httpx.AsyncClient(
        base_url=site.url, headers={"Authorization": f"Bearer {API_TOKEN}"}
    ) as client:
        answer = await client.get("/api/alerts", params={"instrument": f"id:{site.instrument_id}"})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


async def test_alt_click_creates_a_rule_that_fires_on_the_page_and_is_deleted(site: Site) -> None:
    await wait_until(lambda: site.app.state.alerts.listening.is_set(), 10)
    async with Browser() as browser:
        await open_live(browser, site, "1m")
        await browser.wait(f"{PANEL}.rules === '0'")
        # Alt+click halfway between the last close's line and the pane's edge, in the middle
        box = await browser.eval(
            "(() => { const r = document.getElementById('chart').getBoundingClientRect();"
            " return {x: r.left, y: r.top, w: r.width, h: r.height}; })()"
        )
        last_y = await browser.eval(f"window.TH_CHART.candleSeries.priceToCoordinate({site.last_close})")
        up = last_y > 60  # room above the last close: a price above it, else one below
        y = last_y / 2 if up else (last_y + box["h"] * 0.6) / 2
        op = "crosses_above" if up else "crosses_below"
        clicked = await browser.eval(f"window.TH_CHART.candleSeries.coordinateToPrice({y})")
        pixel = abs(await browser.eval(f"window.TH_CHART.candleSeries.coordinateToPrice({y + 1})") - clicked)
        await browser.click_at(box["x"] + box["w"] / 2, box["y"] + y, modifiers=("Alt",))
        label = "document.querySelector('#alerts .alerts-form span').textContent"
        await browser.wait(f"{label}.startsWith('LTP crosses {op}')")
        await browser.call("click", selector="#alerts .alerts-form button[type=submit]")
        await browser.wait(f"{PANEL}.rules === '1'")
        (rule,) = await rules_of(site)
        price = rule["value"]
        # the clicked price, rounded to the paisa (the pointer lands on a whole pixel)
        assert isinstance(price, float) and abs(price - clicked) <= pixel + 0.01
        assert (rule["on"], rule["left"], rule["op"], rule["repeat"]) == ("tick", "ltp", op, "once")
        item = f"#alerts li[data-rule='{rule['id']}']"
        assert await browser.eval(f"document.querySelector(\"{item}\").textContent.includes('fired 0')")

        # a crossing on the live channel: the alert service fires the rule, the page hears it
        now = datetime.now(UTC)
        step = 1.0 if up else -1.0  # from the near side of the line to the far one
        before = Tick(site.instrument_id, now, now, round(price - step, 2), 1, None)
        crossed = round(price + step, 2)
        after = Tick(site.instrument_id, now, now, crossed, 1, None)
        await site.redis.publish(site.channel, codec.encode_ticks([before, after]))
        await browser.wait(f"{PANEL}.fired === '1'")
        note = await browser.eval("document.querySelector('#alerts .alerts-fired').textContent")
        assert str(crossed) in note
        # the list follows: the rule fired once and is done
        await browser.wait(f"document.querySelector(\"{item}\").textContent.includes('(done) · fired 1')")
        await browser.screenshot(ARTIFACTS / "chart-alerts.png")

        await browser.call("click", selector=f"{item} button")  # "history"
        await browser.wait(f'document.querySelector("{item} ol li") !== null')
        history = await browser.eval(f'document.querySelector("{item} ol li").textContent')
        assert f": {crossed} (0 attempts" in history  # no channel: nothing to deliver

        await browser.call("click", selector=f"#alerts button[aria-label='delete alert {rule['id']}']")
        await browser.wait(f"{PANEL}.rules === '0'")
        assert await rules_of(site) == []
        assert await browser.errors() == []
