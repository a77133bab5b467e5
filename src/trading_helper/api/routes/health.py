"""Health checks (public): the whole process, the database, Redis. 503 when something is down.

``/health`` is the one a supervisor (compose, Kubernetes) polls: 503 when the database or Redis
does not answer, or when a supervised task (writer, feed ...) ended or died and waits for its
restart, with a machine-readable ``code`` (``database_unavailable``, ``database_busy``,
``redis_unavailable``, ``ingest_stopped``) and, for a task, its name; 200 ``degraded`` while a
maintenance job has a problem (the process still serves). Dependencies and tasks are named by
error class only, never addresses or messages; ``/api/status`` has the details.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from trading_helper.api.deps import RuntimeDep
from trading_helper.api.runtime import Runtime
from trading_helper.errors import BufferUnavailable, DatabaseBusy, StorageError
from trading_helper.ingest.redisconn import redis_errors
from trading_helper.storage import sql_server
from trading_helper.storage.db import db_errors

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 2.0
_HEALTHY = {
    "description": "healthy",
    "content": {"application/json": {"example": {"status": "healthy", "component": "database"}}},
}
_DOWN = {
    "description": "the component cannot be reached",
    "content": {
        "application/json": {
            "example": {"status": "unhealthy", "component": "database", "detail": "ConnectionRefusedError"}
        }
    },
}


def _answer(component: str, problem: str | None) -> JSONResponse:
    if problem is None:
        return JSONResponse({"status": "healthy", "component": component})
    return JSONResponse({"status": "unhealthy", "component": component, "detail": problem}, status_code=503)


_WHOLE = {
    "description": "something is down",
    "content": {
        "application/json": {
            "example": {
                "status": "unhealthy",
                "code": "ingest_stopped",
                "component": "ingest",
                "task": "writer",
                "detail": "ResponseError",
                "problems": [
                    {
                        "code": "ingest_stopped",
                        "component": "ingest",
                        "task": "writer",
                        "detail": "ResponseError",
                    }
                ],
            }
        }
    },
}


async def _database_problem(rt: Runtime) -> dict[str, str] | None:
    try:
        with db_errors("health check"):
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                async with rt.pool.acquire() as conn:
                    await conn.fetchval(sql_server.PING)
    except DatabaseBusy:
        return {"code": "database_busy", "component": "database", "detail": "DatabaseBusy"}
    except StorageError as exc:
        # no addresses on a public route: the class only (of the original error)
        return {
            "code": "database_unavailable",
            "component": "database",
            "detail": type(exc.__cause__ or exc).__name__,
        }
    return None


async def _redis_problem(rt: Runtime) -> dict[str, str] | None:
    if rt.redis is None:
        return {"code": "redis_unavailable", "component": "redis", "detail": "not configured"}
    try:
        with redis_errors("health check"):
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await rt.redis.ping()
    except BufferUnavailable as exc:
        return {"code": exc.code, "component": "redis", "detail": type(exc.__cause__ or exc).__name__}
    return None


@router.get(
    "/health",
    summary="Everything runs: database, Redis, every supervised task (degraded: a job's problem)",
    responses={
        200: {"description": "healthy", "content": {"application/json": {"example": {"status": "healthy"}}}},
        503: _WHOLE,
    },
)
async def health(rt: RuntimeDep) -> JSONResponse:
    checks = await asyncio.gather(
        _database_problem(rt), _redis_problem(rt) if rt.redis is not None else _none()
    )
    problems = [p for p in checks if p is not None]
    for task in rt.supervisor.down() if rt.supervisor is not None else []:
        problems.append(
            {
                "code": "ingest_stopped",
                "component": "ingest",
                "task": task.name,
                "detail": task.last_error_type or "ended",
            }
        )
    if problems:
        return JSONResponse({"status": "unhealthy", **problems[0], "problems": problems}, status_code=503)
    # the ingest service's job check (storage/jobs.py): a failed or overdue TimescaleDB policy, or
    # our own rollup/retention, is named with its error; the process itself still serves (200)
    status = rt.ingest.status() if rt.ingest is not None else {}
    jobs = status.get("jobs") if isinstance(status, dict) else None
    if isinstance(jobs, dict) and not jobs.get("ok", True):
        return JSONResponse(
            {"status": "degraded", "jobs": jobs.get("problems"), "check_error": jobs.get("check_error")}
        )
    return JSONResponse({"status": "healthy"})


async def _none() -> None:
    return None


@router.get("/health/db", summary="PostgreSQL answers", responses={200: _HEALTHY, 503: _DOWN})
async def health_db(rt: RuntimeDep) -> JSONResponse:
    problem = await _database_problem(rt)
    return _answer("database", problem["detail"] if problem else None)


@router.get("/health/redis", summary="Redis answers", responses={200: _HEALTHY, 503: _DOWN})
async def health_redis(rt: RuntimeDep) -> JSONResponse:
    problem = await _redis_problem(rt)
    return _answer("redis", problem["detail"] if problem else None)
