"""The chart page's ``site``: see tests/browser/chart_site.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.api.server import serve
from tests.browser.chart_site import API_TOKEN, OLD_SESSION_AGO, SESSION, Site, ticks
from tests.ingest.direct_writer import DirectWriter
from tests.storage.helpers import make_instruments, record_live_coverage, reset_market_data
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.config import Settings


@pytest.fixture(scope="module")
async def site(
    db_pool: asyncpg.Pool, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Site]:
    await reset_market_data(db_pool)
    [iid, _] = await make_instruments(db_pool, 2, prefix="CHART")
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    writer = await DirectWriter.open(db_pool)
    recent = ticks(iid, end - SESSION, end, 2500.0, seed=7)
    old = ticks(iid, end - OLD_SESSION_AGO - SESSION, end - OLD_SESSION_AGO, 2400.0, seed=3)
    for captured in (old, recent):  # captured live: coverage as the ingest service records it
        await writer.write(captured)
        await record_live_coverage(
            db_pool, iid, captured[0].exchange_ts, captured[-1].exchange_ts + timedelta(seconds=1)
        )
    await db_pool.execute("CALL refresh_candles()")
    settings = Settings(
        API_TOKEN=API_TOKEN, BROKER="sim", TOKEN_DIR=tmp_path_factory.mktemp("browser-tokens")
    )
    redis = aioredis.from_url(redis_url)
    channel = f"th:live:browser:{uuid.uuid4().hex[:8]}"
    app = create_app(Runtime(settings=settings, pool=db_pool, redis=redis), live_channel=channel)
    try:
        async with serve(app) as url:
            yield Site(url, app, redis, channel, iid, recent[-1].last_price)
    finally:
        await redis.aclose()
