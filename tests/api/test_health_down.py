"""With PostgreSQL and Redis unreachable (closed ports) the API answers 503 with a code that says
which one, never 500; /api/status still answers with what it knows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from tests.api.conftest import API_TOKEN, authorised, closed_port
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.config import Settings


@pytest.fixture
async def down() -> AsyncIterator[httpx.AsyncClient]:
    pg, rd = closed_port(), closed_port()
    settings = Settings(API_TOKEN=API_TOKEN, BROKER="sim")
    # min_size=0: the pool connects on first use, as the service's pool does after a restart of PostgreSQL
    pool = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{pg}/x", min_size=0, max_size=2)
    assert pool is not None
    redis = aioredis.from_url(f"redis://127.0.0.1:{rd}/0", socket_connect_timeout=0.5)
    app = create_app(Runtime(settings=settings, pool=pool, redis=redis), live_channel="th:live:down")
    try:
        async with authorised(app, timeout_s=10) as client:
            yield client
    finally:
        await redis.aclose()
        await pool.close()


async def test_health_reports_503_when_dependencies_are_down(down: httpx.AsyncClient) -> None:
    whole = await down.get("/health")
    assert whole.status_code == 503 and whole.json()["code"] == "database_unavailable", whole.json()
    assert {(p["component"], p["code"]) for p in whole.json()["problems"]} == {
        ("database", "database_unavailable"),
        ("redis", "redis_unavailable"),
    }
    assert "127.0.0.1" not in whole.text  # no addresses on a public route
    db = await down.get("/health/db")
    assert (
        db.status_code == 503 and db.json()["status"] == "unhealthy" and db.json()["component"] == "database"
    )
    rd = await down.get("/health/redis")
    assert rd.status_code == 503 and rd.json()["component"] == "redis"


async def test_api_routes_answer_503_not_500(down: httpx.AsyncClient) -> None:
    for method, path, body in [
        (
            "GET",
            "/api/candles?instrument=id:1&interval=1m&from=2024-03-04T09:15:00&to=2024-03-04T15:30:00",
            None,
        ),
        (
            "POST",
            "/api/candles",
            {
                "instrument_token": 1,
                "from_date": "2024-03-04T09:15:00",
                "to_date": "2024-03-04T15:30:00",
                "interval": "1m",
            },
        ),
        ("GET", "/api/instruments", None),
        ("POST", "/api/instruments/subscribe", {"instruments": ["id:1"]}),
        ("GET", "/api/quotes/id:1", None),  # the instrument is looked up first
    ]:
        resp = await down.request(method, path, json=body)
        assert resp.status_code == 503, (path, resp.text)
        assert resp.json()["code"] == "database_unavailable", (path, resp.json())
        assert resp.headers["retry-after"] == "5" and "Traceback" not in resp.text


async def test_status_answers_while_the_database_is_down(down: httpx.AsyncClient) -> None:
    status = await down.get("/api/status")
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["database"] == {"up": False, "error": "database_unavailable"}
    assert body["stream"]["error"] == "redis unreachable" and body["subscriptions"] is None
