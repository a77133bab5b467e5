"""Schemathesis against the OpenAPI schema: generated valid and invalid requests to every
operation find no 5xx. The server runs in a thread of its own (schemathesis calls synchronously),
over a real database and Redis, with the simulator broker behind backfill and sync."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.api.conftest import API_TOKEN, api_redis_url
from tests.api.server import serve_in_thread
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.brokers.sim import SimBroker
from trading_helper.config import Settings
from trading_helper.storage.instruments import sync_instruments

#: generated requests per operation and mode: a bounded run (about 15 operations x 2 modes)
EXAMPLES = 25


@pytest.fixture(scope="module")
def api_url(db_dsn: str, redis_url: str) -> Iterator[str]:
    async def build() -> tuple[Any, Callable[[], Awaitable[None]]]:
        app_settings = Settings(API_TOKEN=API_TOKEN, BROKER="sim", SIM_INSTRUMENTS=40)
        pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=4)
        assert pool is not None
        broker = SimBroker(app_settings)
        async with pool.acquire() as conn:
            await sync_instruments(conn, "sim", await broker.fetch_instruments())
        redis = aioredis.from_url(api_redis_url(redis_url))
        app = create_app(Runtime(app_settings, pool, redis, broker), live_channel=f"th:live:fuzz:{uuid.uuid4().hex}")

        async def cleanup() -> None:
            await broker.aclose()
            await redis.aclose()
            await pool.close()

        return app, cleanup

    with serve_in_thread(build) as url:
        yield url


def test_no_operation_answers_5xx(api_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    tried = 0
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def run(case: schemathesis.Case) -> None:
                nonlocal tried
                tried += 1
                case.call_and_validate(base_url=api_url, headers=auth, checks=[not_a_server_error])

            try:
                run()
            except Unsatisfiable:
                # an operation without inputs (GET /health) has no invalid request to make
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert tried >= len(operations) * EXAMPLES
