"""The chart page plays a past session through WS /api/ws/replay (static/replay.js): the chart is
emptied and rebuilt from the replayed candle messages, then goes back to live."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from tests.browser.chart_site import API_TOKEN, Site
from tests.browser.driver import Browser
from trading_helper.timeframes import IST


async def test_the_page_replays_a_past_range_then_goes_back_to_live(
    site: Site, db_pool: asyncpg.Pool
) -> None:
    last = await db_pool.fetchval(
        "SELECT max(time) FROM tick_data WHERE instrument_id = $1", site.instrument_id
    )
    start = (last - timedelta(minutes=30)).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=10)
    rows = await db_pool.fetch(
        "SELECT time, ltp FROM tick_data WHERE instrument_id = $1 AND time >= $2 AND time < $3 ORDER BY time",
        site.instrument_id,
        start,
        end,
    )
    quotes = await db_pool.fetchval(
        "SELECT count(*) FROM quote_updates WHERE instrument_id = $1 AND time >= $2 AND time < $3",
        site.instrument_id,
        start,
        end,
    )
    minutes = {r["time"].replace(second=0, microsecond=0) for r in rows}
    assert len(rows) >= 30
    local = "%Y-%m-%dT%H:%M:%S"
    async with Browser() as browser:
        await browser.open(f"{site.url}/#token={API_TOKEN}&instrument={site.instrument_id}&tf=1m")
        await browser.wait("document.getElementById('chart').dataset.ready === 'true'")
        live_candles = int((await browser.chart())["candles"])
        await browser.eval(
            "(() => { const f = document.getElementById('replay');"
            f" f.elements.from.value = '{start.astimezone(IST).strftime(local)}';"
            f" f.elements.to.value = '{end.astimezone(IST).strftime(local)}';"
            " f.elements.speed.value = 'max'; f.querySelector('button').click(); return true; })()"
        )
        await browser.wait("document.getElementById('chart').dataset.replay === 'done'")
        played = await browser.chart()
        assert int(played["replayTicks"]) == len(rows) + quotes
        assert played["replayHoles"] == "0"  # the site has no session in this range: nothing to miss
        assert int(played["candles"]) == len(minutes)
        assert float(played["lastClose"]) == rows[-1]["ltp"]
        assert await browser.eval("document.querySelector('#replay button').textContent") == "Live"
        await browser.eval("document.querySelector('#replay button').click() || true")
        await browser.wait(
            f"document.getElementById('chart').dataset.ready === 'true' && "
            f"Number(document.getElementById('chart').dataset.candles) >= {live_candles}"
        )
        assert (await browser.chart())["replay"] == "idle"
        assert await browser.errors() == []


async def test_the_source_choice_is_kept_and_sent_with_every_candle_read(site: Site) -> None:
    async with Browser() as browser:
        await browser.open(f"{site.url}/#token={API_TOKEN}&instrument={site.instrument_id}&tf=5m")
        await browser.wait("document.getElementById('chart').dataset.ready === 'true'")
        assert any("prefer=live" in r for r in await browser.requests())
        await browser.eval(
            "(() => { const p = document.getElementById('prefer'); p.value = 'broker';"
            " p.dispatchEvent(new Event('change')); return true; })()"
        )
        await browser.wait("localStorage.getItem('trading-helper.prefer') === 'broker'")
        await browser.wait("document.getElementById('chart').dataset.ready === 'true'")
        await browser.wait(
            "performance.getEntriesByType('resource').some(e => e.name.includes('prefer=broker'))"
        )
        assert any("prefer=broker" in r for r in await browser.requests())
        assert await browser.errors() == []
