"""The chart page in headless Chromium against the real API: candles render, scrolling back loads
older history, and a live tick published on the live channel moves the last candle (through the
server's candle messages: the page builds no candle and no volume itself)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.browser.chart_site import API_TOKEN, ARTIFACTS, Site, open_live, until_watched, watched
from tests.browser.driver import Browser
from trading_helper.ingest import codec
from trading_helper.models import Tick
from trading_helper.timeframes import IST


async def test_chart_renders_scrolls_back_and_moves_with_a_live_tick(site: Site) -> None:
    async with Browser() as browser:
        await browser.open(f"{site.url}/#token={API_TOKEN}&instrument={site.instrument_id}&tf=1m")
        await browser.wait("document.getElementById('chart').dataset.ready === 'true'")
        first = await browser.chart()
        assert int(first["candles"]) >= 150 and first["timeframe"] == "1m"
        assert float(first["lastClose"]) == site.last_close
        assert await browser.eval("document.querySelectorAll('#chart canvas').length") > 0
        assert "token=" not in await browser.eval("location.href")  # the token left the address bar
        assert await browser.eval("document.getElementById('search').value") == "NSE:CHART0"

        # a live tick above the last close, through the same channel the ingest service publishes on
        await browser.wait("document.getElementById('status').dataset.ws === 'open'")
        await until_watched(site)
        assert watched(site)
        price = round(site.last_close + 3.5, 2)
        now = datetime.now(UTC)
        tick = Tick(
            instrument_id=site.instrument_id,
            exchange_ts=now,
            received_ts=now,
            last_price=price,
            last_quantity=75,
            volume=None,
        )
        await site.redis.publish(site.channel, codec.encode_ticks([tick]))
        await browser.wait(f"document.getElementById('chart').dataset.lastClose === '{price}'")
        moved = await browser.chart()
        assert float(moved["lastHigh"]) == price and int(moved["ticks"]) >= 1
        bucket = datetime.fromisoformat(moved["lastTime"])
        assert bucket <= now < bucket + timedelta(minutes=1)
        shot = await browser.screenshot(ARTIFACTS / "chart.png")
        assert shot.stat().st_size > 10_000

        # pan back in time: the page asks the API for the range before its first window
        for _ in range(6):
            await browser.drag(400, 300, 500)
            if datetime.fromisoformat((await browser.chart())["oldest"]) < datetime.now(UTC) - timedelta(
                days=3
            ):
                break
        await browser.wait(
            "Date.parse(document.getElementById('chart').dataset.oldest) < Date.now() - 3 * 864e5"
        )
        older = await browser.chart()
        assert int(older["candles"]) > int(moved["candles"])
        assert await browser.errors() == []


@pytest.mark.parametrize("tf", ["1h", "1d"])
async def test_live_ticks_open_new_bars_on_the_shared_ist_marks(site: Site, tf: str) -> None:
    # 1h bars start at 09:15, 10:15 ... IST and 1d bars at 00:15 IST, as in the database
    async with Browser() as browser:
        await open_live(browser, site, tf)
        last = datetime.fromisoformat((await browser.chart())["lastTime"]).astimezone(IST)
        assert (last.hour, last.minute) == ((0, 15) if tf == "1d" else (last.hour, 15))
        width = timedelta(days=1) if tf == "1d" else timedelta(hours=1)
        later = last + width + timedelta(minutes=20)  # inside the bar after the last one
        tick = Tick(
            instrument_id=site.instrument_id,
            exchange_ts=later,
            received_ts=later,
            last_price=1234.5,
            last_quantity=10,
            volume=None,
        )
        await site.redis.publish(site.channel, codec.encode_ticks([tick]))
        await browser.wait("document.getElementById('chart').dataset.lastClose === '1234.5'")
        assert datetime.fromisoformat((await browser.chart())["lastTime"]) == last + width


async def test_the_page_applies_the_servers_candles_and_builds_none_itself(site: Site) -> None:
    # 5m: the last bar the REST read gives is the one still forming (the data ends a minute ago)
    async with Browser() as browser:
        await open_live(browser, site, "5m")
        held = await browser.chart()
        bar = datetime.fromisoformat(held["lastTime"])
        price = round(float(held["lastHigh"]) + 2.5, 2)
        # a trade inside the bar the read already held: the server's candle moves its prices and
        # adds its volume to the read's (0 here: an LTP-only update brings no known volume)
        inside = bar + timedelta(minutes=4, seconds=30)
        await site.redis.publish(
            site.channel,
            codec.encode_ticks(
                [
                    Tick(
                        instrument_id=site.instrument_id,
                        exchange_ts=inside,
                        received_ts=inside,
                        last_price=price,
                        last_quantity=75,
                        volume=None,
                    )
                ]
            ),
        )
        await browser.wait(f"document.getElementById('chart').dataset.lastClose === '{price}'")
        moved = await browser.chart()
        assert (moved["lastTime"], moved["lastHigh"], moved["lastVolume"]) == (
            held["lastTime"],
            str(price),
            held["lastVolume"],
        )
        # two trades with the day's cumulative volume: the second adds its increment (12) as the
        # server counted it (the first sight's share is the server's first-sight rule, not the page's)
        for n, (volume, qty) in enumerate([(5000, 5), (5012, 12)], start=1):
            at = inside + timedelta(seconds=n)
            await site.redis.publish(
                site.channel,
                codec.encode_ticks(
                    [
                        Tick(
                            instrument_id=site.instrument_id,
                            exchange_ts=at,
                            received_ts=at,
                            last_price=price + n,
                            last_quantity=qty,
                            volume=volume,
                        )
                    ]
                ),
            )
            await browser.wait(f"document.getElementById('chart').dataset.lastClose === '{price + n}'")
            if n == 1:
                first = int((await browser.chart())["lastVolume"])
                assert first >= int(held["lastVolume"])
        assert int((await browser.chart())["lastVolume"]) == first + 12
        # the next bar is the server's candle as it is: volume 0 again (the page's own rule used
        # to count the last quantity, 12)
        after = bar + timedelta(minutes=5, seconds=30)
        await site.redis.publish(
            site.channel,
            codec.encode_ticks(
                [
                    Tick(
                        instrument_id=site.instrument_id,
                        exchange_ts=after,
                        received_ts=after,
                        last_price=1111.5,
                        last_quantity=12,
                        volume=None,
                    )
                ]
            ),
        )
        await browser.wait("document.getElementById('chart').dataset.lastClose === '1111.5'")
        new = await browser.chart()
        assert datetime.fromisoformat(new["lastTime"]) == bar + timedelta(minutes=5)
        assert (new["lastHigh"], new["lastLow"], new["lastVolume"]) == ("1111.5", "1111.5", "0")
        assert int(new["ticks"]) == 4 and int(new["candles"]) == int(held["candles"]) + 1
        assert await browser.errors() == []


async def test_timeframe_and_search_pickers(site: Site) -> None:
    async with Browser() as browser:
        await browser.open(f"{site.url}/#token={API_TOKEN}&instrument={site.instrument_id}&tf=1m")
        await browser.wait("document.getElementById('chart').dataset.ready === 'true'")
        await browser.call("click", selector="button[data-tf='15m']")
        await browser.wait(
            "document.getElementById('chart').dataset.timeframe === '15m' && "
            "document.getElementById('chart').dataset.ready === 'true'"
        )
        fifteen = await browser.chart()
        assert (
            0 < int(fifteen["candles"]) <= 2 * 4 * 4
        )  # two sessions of 3 h, at most 4 bars an hour (+edges)
        assert datetime.fromisoformat(fifteen["lastTime"]).minute % 15 == 0

        await browser.call("type", selector="#search", text="chart1")
        await browser.wait("document.querySelectorAll('#results li').length === 1")
        await browser.call("press", key="Enter")
        await browser.wait(
            "document.getElementById('search').value === 'NSE:CHART1' && "
            "document.getElementById('chart').dataset.ready === 'true'"
        )
        other = await browser.chart()
        assert other["instrument"] != str(site.instrument_id) and other["candles"] == "0"
        await browser.call("type", selector="#search", text="BSE:CHART")  # no BSE instruments here
        await browser.call("type", selector="#search", text="NSE:CHART")
        await browser.wait("document.querySelectorAll('#results li').length === 2")
        assert await browser.errors() == []


#: records every (connection state, status text, legend text) the page shows, from its first paint
RECORD = """
window.__seen = [];
new MutationObserver(() => {
  const status = document.getElementById('status'), legend = document.getElementById('legend');
  if (!status || !legend) return;
  const entry = [status.dataset.ws, status.textContent, legend.textContent];
  const last = window.__seen[window.__seen.length - 1];
  if (!last || last.join('|') !== entry.join('|')) window.__seen.push(entry);
}).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
"""
FEED_WORDS = {"open": "live", "connecting": "connecting…", "closed": "disconnected"}


async def test_the_status_dot_legend_and_search_never_say_what_is_not_so(site: Site) -> None:
    async with Browser() as browser:
        await browser.open(
            f"{site.url}/#token={API_TOKEN}&instrument={site.instrument_id}&tf=1m", init=RECORD
        )
        await browser.wait(
            "document.getElementById('chart').dataset.ready === 'true' && "
            "document.getElementById('status').dataset.ws === 'open'"
        )
        await until_watched(site)
        now = datetime.now(UTC)
        tick = Tick(
            instrument_id=site.instrument_id,
            exchange_ts=now,
            received_ts=now,
            last_price=2222.5,
            last_quantity=5,
            volume=None,
        )
        await site.redis.publish(site.channel, codec.encode_ticks([tick]))
        await browser.wait("document.getElementById('status').textContent.startsWith('live · last tick')")
        # the server drops the page's live connection: the page says so, then reconnects
        for client in list(site.app.state.hub.clients):
            site.app.state.hub.drop(client)
        await browser.wait("window.__seen.some((e) => e[0] === 'closed')")
        await browser.wait("document.getElementById('status').dataset.ws === 'open'")
        seen = await browser.eval("window.__seen")
        for ws, text, _legend in seen:
            assert text.split(" · ")[0] == FEED_WORDS[ws], seen  # the words and the dot agree
        assert any(ws == "closed" and "last tick" in text for ws, text, _ in seen)
        legends = [legend for _, _, legend in seen]
        assert "loading…" in legends and any(legend.startswith("NSE:CHART0 · 1m") for legend in legends)
        assert all(
            legend in ("", "loading…") or legend.startswith("NSE:CHART0 · 1m") for legend in legends
        ), legends

        # a search that finds nothing says so, and Enter picks nothing
        await browser.call("type", selector="#search", text="NOSUCHTHING")
        await browser.wait("document.querySelector('#results li.empty') !== null")
        assert (
            await browser.eval("document.getElementById('results').textContent")
            == "no results for NOSUCHTHING"
        )
        assert not await browser.eval("document.getElementById('results').hidden")
        await browser.call("press", key="Enter")
        assert (await browser.chart())["instrument"] == str(site.instrument_id)
        await browser.call("type", selector="#search", text="")
        await browser.wait("document.getElementById('results').hidden")
        assert await browser.errors() == []


async def test_without_a_token_the_page_asks_for_one(site: Site) -> None:
    async with Browser() as browser:
        await browser.open(f"{site.url}/")
        await browser.eval("localStorage.clear()")
        await browser.open(f"{site.url}/#token=wrong-token")
        await browser.wait("!document.getElementById('token-form').hidden")
        await browser.call("type", selector="#token-input", text=API_TOKEN)
        await browser.call("click", selector="#token-form button")
        await browser.wait("document.getElementById('chart').dataset.ready === 'true'")
        assert int((await browser.chart())["candles"]) > 0
