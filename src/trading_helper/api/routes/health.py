"""Health checks (public): the process, the database, Redis. 503 when a dependency is down."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from trading_helper.api.deps import RuntimeDep

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 2.0
_HEALTHY = {"description": "healthy", "content": {"application/json": {"example": {
    "status": "healthy", "component": "database"}}}}
_DOWN = {"description": "the component cannot be reached", "content": {"application/json": {"example": {
    "status": "unhealthy", "component": "database", "detail": "ConnectionRefusedError"}}}}


def _answer(component: str, problem: str | None) -> JSONResponse:
    if problem is None:
        return JSONResponse({"status": "healthy", "component": component})
    return JSONResponse({"status": "unhealthy", "component": component, "detail": problem}, status_code=503)


@router.get("/health", summary="The API process is up; degraded while a maintenance job has a problem")
async def health(rt: RuntimeDep) -> dict[str, Any]:
    # the ingest service's job check (storage/jobs.py): a failed or overdue TimescaleDB policy, or
    # our own rollup/retention, is named with its error; the process itself still serves (200)
    status = rt.ingest.status() if rt.ingest is not None else {}
    jobs = status.get("jobs") if isinstance(status, dict) else None
    if isinstance(jobs, dict) and not jobs.get("ok", True):
        return {"status": "degraded", "jobs": jobs.get("problems"), "check_error": jobs.get("check_error")}
    return {"status": "healthy"}


@router.get("/health/db", summary="PostgreSQL answers", responses={200: _HEALTHY, 503: _DOWN})
async def health_db(rt: RuntimeDep) -> JSONResponse:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            async with rt.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _answer("database", type(exc).__name__)  # no addresses on a public route
    return _answer("database", None)


@router.get("/health/redis", summary="Redis answers", responses={200: _HEALTHY, 503: _DOWN})
async def health_redis(rt: RuntimeDep) -> JSONResponse:
    if rt.redis is None:
        return _answer("redis", "not configured")
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await rt.redis.ping()
    except (OSError, TimeoutError, RedisError) as exc:
        return _answer("redis", type(exc).__name__)
    return _answer("redis", None)
