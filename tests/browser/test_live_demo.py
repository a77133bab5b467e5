"""The chart page on the whole running system: the simulator broker's feed through the real ingest
service (receiver -> Redis stream and live channel -> writer -> candle refresh) and the real API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from tests.api.server import serve
from tests.browser.driver import Browser
from tests.storage.helpers import make_instruments, reset_market_data
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.brokers.sim import SimBroker
from trading_helper.config import Settings
from trading_helper.ingest.service import IngestService

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
API_TOKEN = "live-demo-token-0123456789"


@dataclass
class Running:
    url: str
    instrument_id: int
    service: IngestService


@pytest.fixture(scope="module")
async def running(
    db_pool: asyncpg.Pool, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    await reset_market_data(db_pool)
    [iid, *_] = await make_instruments(db_pool, 3, prefix="LIVE")
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        API_TOKEN=API_TOKEN,
        BROKER="sim",
        SIM_INSTRUMENTS=3,
        SIM_TICKS_PER_SECOND=30,
        TICK_STREAM=f"th:ticks:browser:{tag}",
        REFRESH_INTERVAL_S=1,
        TOKEN_DIR=tmp_path_factory.mktemp("live-tokens"),
    )
    broker = SimBroker(settings)
    redis = aioredis.from_url(redis_url)
    service = IngestService(settings, db_pool, redis, broker, consumer=f"browser-{tag}")
    channel = f"th:live:browser:{tag}"
    service.receiver.live_channel = channel  # this test's own channel on the shared Redis
    app = create_app(
        Runtime(settings=settings, pool=db_pool, redis=redis, broker=broker, ingest=service),
        live_channel=channel,
    )
    await service.start()
    try:
        async with serve(app) as url:
            async with httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}
            ) as client:
                answer = await client.post("/api/instruments/subscribe", json={"instruments": [f"id:{iid}"]})
                assert answer.status_code == 200, answer.text
            yield Running(url, iid, service)
    finally:
        await service.stop()
        await redis.delete(settings.TICK_STREAM)
        await broker.aclose()
        await redis.aclose()


async def test_simulated_ticks_reach_the_chart_live_and_through_the_database(running: Running) -> None:
    async with Browser() as browser:
        page = f"{running.url}/#token={API_TOKEN}&instrument={running.instrument_id}&tf=1m"
        await browser.open(page)
        await browser.wait("document.getElementById('chart').dataset.ready === 'true'")
        # live: ticks from the simulator's feed, through the receiver's live channel and the hub
        await browser.wait("Number(document.getElementById('chart').dataset.ticks) >= 3", timeout_s=30)
        live = await browser.chart()
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        assert datetime.fromisoformat(live["lastTime"]) >= minute - timedelta(minutes=1)

        # stored: the writer committed them and the refresh made candles the API serves
        for _ in range(60):
            if running.service.writer.stats.written > 0 and running.service.last_refresh_at is not None:
                break
            await asyncio.sleep(0.25)
        assert running.service.writer.stats.written > 0
        await browser.open(page)
        await browser.wait(
            "document.getElementById('chart').dataset.ready === 'true' && "
            "Number(document.getElementById('chart').dataset.candles) > 0"
        )
        stored = await browser.chart()
        assert datetime.fromisoformat(stored["lastTime"]) >= minute - timedelta(minutes=1)
        await browser.screenshot(ARTIFACTS / "chart-live.png")
        assert await browser.errors() == []
