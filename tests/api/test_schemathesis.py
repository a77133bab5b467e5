"""Schemathesis with every check against the OpenAPI schema: generated valid and invalid requests
to every operation find no 5xx, only documented status codes, bodies that fit the documented
schemas, schema-valid requests accepted, schema-invalid ones refused, and 401 without the token.
The server runs in a thread of its own (schemathesis calls synchronously), over a real database
and Redis, with the simulator broker behind backfill and sync."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, CheckContext, load_all_checks

from tests.api.conftest import API_TOKEN, api_redis_url
from tests.api.server import serve_in_thread
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.brokers.sim import SimBroker
from trading_helper.candles.service import MAX_SPAN
from trading_helper.config import Settings
from trading_helper.storage.instruments import sync_instruments

#: generated requests per operation and mode: a bounded run (14 operations x 2 modes x 25, about
#: 650 requests plus the checks' own re-sends without the token; ~15 s alone on this machine)
EXAMPLES = 25
#: what a schema-valid request may still be refused for: rules JSON Schema cannot state. A range
#: across two fields (from < to, the span per interval: the operation's ``x-range-limits``), and
#: the reference grammar's ranges inside a string (``"0"``, ``"id:0"``, ``"kite:x"``). FastAPI's own
#: ``invalid_request`` is never among them: that would be the schema and the validator disagreeing.
#: An alert rule's meaning (a study's parameters, a series compared with itself, a channel this
#: server has no secret or bot token for) is ``invalid_alert``, checked by ``alerts/rules.py``.
SEMANTIC_REFUSALS = {
    (400, "invalid_range"),
    (422, "invalid_reference"),
    (422, "invalid_study"),
    (422, "invalid_alert"),
}


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
        app = create_app(
            Runtime(app_settings, pool, redis, broker), live_channel=f"th:live:fuzz:{uuid.uuid4().hex}"
        )

        async def cleanup() -> None:
            await broker.aclose()
            await redis.aclose()
            await pool.close()

        return app, cleanup

    with serve_in_thread(build) as url:
        yield url


def semantic_acceptance(ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    """``positive_data_acceptance`` with ``SEMANTIC_REFUSALS`` allowed: a schema-valid request is
    answered 2xx, or 401/403/404/409/429 (what the default check allows), or one of those."""
    if response.status_code < 400 or response.status_code in (401, 403, 404, 409, 429):
        return True
    code = (
        response.json().get("code")
        if response.headers.get("content-type", [""])[0].startswith("application/json")
        else None
    )
    assert (response.status_code, code) in SEMANTIC_REFUSALS, (
        f"schema-valid request refused: {response.status_code} {response.text[:300]}"
    )
    return True


def _explore(
    operation: Any,
    mode: GenerationMode,
    checks: list[Any],
    api_url: str,
    auth: dict[str, str],
    statuses: list[int],
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(base_url=api_url, headers=auth, checks=checks)
        statuses.append(response.status_code)

    run()


def test_every_check_passes_on_every_operation(api_url: str) -> None:
    load_all_checks()
    every = {name: CHECKS.get_one(name) for name in CHECKS.get_all_names()}
    acceptance = every.pop("positive_data_acceptance")
    negative_checks = list(every.values())
    positive_checks = [*negative_checks, semantic_acceptance]
    assert acceptance not in positive_checks and len(every) >= 12
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    statuses: list[int] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            checks = positive_checks if mode is GenerationMode.POSITIVE else negative_checks
            try:
                _explore(operation, mode, checks, api_url, auth, statuses)
            except Unsatisfiable:
                # an operation without inputs (GET /health) has no invalid request to make
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert len(statuses) >= len(operations) * EXAMPLES
    assert [s for s in statuses if s >= 500] == []


def test_the_schema_documents_the_edges(api_url: str) -> None:
    """401 and 503 on every /api operation, 413 where a body is read, 422 in our error shape,
    and the candle range limits from the rule the server applies."""
    spec = httpx.get(f"{api_url}/openapi.json").json()
    operations = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    for path, method, op in operations:
        codes = set(op["responses"])
        if path.startswith("/api/"):
            assert {"401", "503"} <= codes, (method, path)
        if "requestBody" in op:
            assert "413" in codes, (method, path)
        if "422" in codes:
            assert op["responses"]["422"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/InvalidRequestOut"
            }, (method, path)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for method in ("get", "post"):
        limits = spec["paths"]["/api/candles"][method]["x-range-limits"]
        assert limits["max_span_days"] == {tf.value: span.days for tf, span in MAX_SPAN.items()}
    ref = spec["components"]["schemas"]["CandleRequest"]["properties"]["instrument_token"]["anyOf"][0]
    assert ref == {"type": "integer", "minimum": 1, "maximum": 2**32 - 1}
