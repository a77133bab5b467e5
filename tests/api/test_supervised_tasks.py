"""The ingest service's tasks as /health, /api/status and /metrics show them: a writer that dies
is reported down (503 ``ingest_stopped``), restarted with backoff, and healthy again."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import httpx
import redis.asyncio as aioredis

from tests.api.conftest import API_TOKEN, authorised, ingest_redis_url
from tests.e2e.helpers import eventually
from tests.storage.helpers import reset_market_data
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.brokers.sim import SimBroker
from trading_helper.config import Settings
from trading_helper.ingest import keys
from trading_helper.ingest.service import IngestService
from trading_helper.storage.instruments import sync_instruments
from trading_helper.supervisor import Supervisor


@dataclass
class Running:
    service: IngestService
    client: httpx.AsyncClient
    redis: aioredis.Redis
    stream: str


@asynccontextmanager
async def running_with_api(pool: asyncpg.Pool, redis_url: str) -> AsyncIterator[Running]:
    """The simulator's ingest service and the API over it, sharing one supervisor."""
    await reset_market_data(pool)
    url = ingest_redis_url(redis_url)
    stream = f"th:sup:{uuid.uuid4().hex[:8]}"
    settings = Settings(
        REDIS_URL=url,
        BROKER="sim",
        SIM_INSTRUMENTS=10,
        SIM_TICKS_PER_SECOND=200,
        TICK_STREAM=stream,
        API_TOKEN=API_TOKEN,
        REFRESH_INTERVAL_S=1.0,
    )
    broker = SimBroker(settings)
    async with pool.acquire() as conn:
        await sync_instruments(conn, "sim", await broker.fetch_instruments())
        await conn.execute("TRUNCATE subscriptions, live_coverage")
        await conn.execute(
            "INSERT INTO subscriptions (instrument_id) SELECT instrument_id FROM instrument_broker_ids "
            "WHERE broker = 'sim' ORDER BY instrument_id LIMIT 10"
        )
    redis = aioredis.Redis.from_url(url)
    supervisor = Supervisor(backoff_initial_s=0.3, backoff_max_s=2.0)
    service = IngestService(settings, pool, redis, broker, supervisor=supervisor)
    service.receiver.quotes_key = f"{stream}:quotes"
    service.receiver.live_channel = f"{stream}:live"
    app = create_app(
        Runtime(settings, pool, redis, broker, service, supervisor), live_channel=f"{stream}:live"
    )
    await service.start()
    try:
        async with authorised(app, timeout_s=10) as client:
            yield Running(service, client, redis, stream)
    finally:
        await service.stop()
        await redis.delete(stream, f"{stream}:quotes", keys.STATUS)
        await redis.aclose()
        await broker.aclose()


def sample(metrics: str, name: str, task: str) -> float:
    match = re.search(rf'^{name}{{task="{task}"}} (\S+)$', metrics, flags=re.MULTILINE)
    assert match, f"{name}{{task={task}}} not in /metrics"
    return float(match.group(1))


async def test_a_writer_that_dies_is_shown_down_then_restarted(db_pool: asyncpg.Pool, redis_url: str) -> None:
    async with running_with_api(db_pool, redis_url) as run:
        client, service = run.client, run.service

        async def health_is(code: int) -> bool:
            return (await client.get("/health")).status_code == code

        await eventually(lambda: health_is(200), "healthy at start", service=service)
        await eventually(lambda: service.writer.stats.written > 0, "ticks written", service=service)
        restarts_before = sample((await client.get("/metrics")).text, "th_task_restarts_total", "writer")
        tasks = (await client.get("/api/status")).json()["tasks"]
        assert set(tasks) == {
            "writer",
            "feed",
            "coverage",
            "housekeeping",
            "maintenance",
            "option-snapshots",
            "alerts",
            "alert-delivery",
            "api-singletons",  # the leases alerts and snapshots run under (api/singletons.py)
        }
        assert {t["state"] for t in tasks.values()} == {"running"}

        # the stream's key replaced by a string: the writer's next read fails with WRONGTYPE, an
        # error it does not handle, so it dies (and dies again at each restart while this lasts)
        await run.redis.set(run.stream, b"not a stream")
        answers: list[httpx.Response] = []

        async def writer_down() -> bool:  # it restarts and dies again: keep the answer that saw it down
            answers.append(await client.get("/health"))
            return answers[-1].status_code == 503

        await eventually(writer_down, "/health 503 while the writer is down", service=service)
        down = answers[-1].json()
        writer_problem = {
            "code": "ingest_stopped",
            "component": "ingest",
            "task": "writer",
            "detail": "ResponseError",
        }
        assert writer_problem in down["problems"], down
        assert down["code"] == "ingest_stopped" and down["task"] == "writer", down
        writer = (await client.get("/api/status")).json()["tasks"]["writer"]
        assert writer["last_error"].startswith("ResponseError: "), writer  # WRONGTYPE, or UNBLOCKED mid-read
        assert service.status()["tasks_down"] in ([], ["writer"])  # it may be between two runs

        async def writer_reported_down() -> bool:
            metrics = (await client.get("/metrics")).text
            return sample(metrics, "th_task_up", "writer") == 0.0

        await eventually(writer_reported_down, "th_task_up{task=writer} 0", service=service)

        await run.redis.delete(run.stream)  # the cause is gone: the next restart runs for good
        await eventually(
            lambda: health_is(200), "/health 200 after the restart", within_s=15, service=service
        )
        writer = (await client.get("/api/status")).json()["tasks"]["writer"]
        assert writer["state"] == "running" and writer["restarts"] >= 1, writer
        metrics = (await client.get("/metrics")).text
        assert sample(metrics, "th_task_up", "writer") == 1.0
        assert sample(metrics, "th_task_restarts_total", "writer") >= restarts_before + 1
        written = service.writer.stats.written
        await eventually(
            lambda: service.writer.stats.written > written, "ticks written after the restart", service=service
        )
