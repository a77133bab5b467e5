"""What the system is doing: ``/api/status`` (JSON) and ``/metrics`` (Prometheus, public)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import ResponseError

from trading_helper.api.deps import RuntimeDep, ServiceDep
from trading_helper.api.runtime import Runtime
from trading_helper.cluster.status import cluster_status
from trading_helper.errors import BufferUnavailable, QueryFailed, StorageError
from trading_helper.ingest import keys
from trading_helper.ingest.redisconn import redis_errors
from trading_helper.ingest.status import decode_status
from trading_helper.storage import sql_instruments
from trading_helper.storage.db import db_errors

router = APIRouter(tags=["status"])
metrics_router = APIRouter(tags=["status"])

_TIMEOUT_S = 2.0
_EXAMPLE = {
    "broker": {"name": "kite", "state": "connected"},
    "database": {"up": True, "error": None},
    "tasks": {
        "writer": {
            "state": "running",
            "restarts": 1,
            "last_error": "ResponseError: WRONGTYPE ...",
            "since": "2025-10-17T10:02:03+00:00",
        }
    },
    "subscriptions": 250,
    "ingest": {"feed_state": "connected", "subscriptions": 250, "received": 1834021, "written": 1834021},
    "ingest_rates": {"received_per_s": 812.4, "written_per_s": 812.4, "over_s": 5.0},
    "stream": {"name": "th:ticks", "pending": 12, "lag": 0},
    "last_backfill": {
        "instrument_id": 1,
        "timeframe": "5m",
        "from": "2025-10-16T09:15:00+05:30",
        "to": "2025-10-16T15:30:00+05:30",
        "candles": 75,
        "at": "2025-10-17T10:02:03+05:30",
        "error": None,
    },
    "websocket_clients": 2,
    "singletons": {"held": ["alerts:th:live", "option-snapshots:th:quotes"], "standby": []},
    "cluster": {
        "broker": "kite",
        "accounts": ["a", "b"],
        "instruments": 12000,
        "unassigned": 0,
        "unhonoured_pins": 0,
        "shards": {
            "kite:a:0": {
                "instruments": 2000,
                "collector": "host-1:41:9f2c1a",
                "feed_state": "connected",
                "stream": "th:ticks:kite:a:0",
                "writer": "host-2:77:03b4de",
            }
        },
        "writers": {
            "host-2:77:03b4de": {
                "streams": ["th:ticks:kite:a:0"],
                "written": 1834021,
                "lost": 0,
                "dead_lettered": 0,
                "maintenance": True,
            }
        },
    },
}


async def _cluster(rt: Runtime) -> dict[str, Any] | None:
    """The shard plan and its collectors and writers (None: no ``collect`` processes run)."""
    if rt.redis is None:
        return None
    try:
        with redis_errors("cluster status read"):
            async with asyncio.timeout(_TIMEOUT_S):
                return await cluster_status(rt.redis, rt.settings.TICK_STREAM)
    except BufferUnavailable:
        return {"error": "redis unreachable"}


async def _redis_status(rt: Runtime) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The ingest service's published status hash and the writer group's lag on the tick stream."""
    if rt.redis is None:
        return None, None
    stream = rt.settings.TICK_STREAM
    try:
        with redis_errors("status read"):
            async with asyncio.timeout(_TIMEOUT_S):
                raw = await rt.redis.hgetall(keys.STATUS)
                try:
                    groups = await rt.redis.xinfo_groups(stream)
                except ResponseError:  # no stream yet
                    groups = []
    except BufferUnavailable:
        return None, {"name": stream, "error": "redis unreachable"}
    published = decode_status(raw) if raw else None
    lag: dict[str, Any] = {"name": stream, "pending": None, "lag": None}
    for group in groups:
        if _text(group.get("name", b"")) == keys.WRITER_GROUP:
            lag.update(pending=group.get("pending"), lag=group.get("lag"))
    return published, lag


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class IngestRates:
    """Ticks per second received and written, from the ingest counters of successive status
    reads (at least a second apart); None until there are two."""

    def __init__(self) -> None:
        self._last: tuple[float, float, float] | None = None
        self.rates: dict[str, float] | None = None

    def update(self, ingest: dict[str, Any] | None) -> dict[str, float] | None:
        if ingest is None:
            return self.rates
        try:
            received, written = float(ingest["received"]), float(ingest["written"])
        except (TypeError, KeyError, ValueError):
            return self.rates
        now = time.monotonic()
        if self._last is not None and now - self._last[0] >= 1.0:
            elapsed = now - self._last[0]
            self.rates = {
                "received_per_s": round(max(0.0, received - self._last[1]) / elapsed, 1),
                "written_per_s": round(max(0.0, written - self._last[2]) / elapsed, 1),
                "over_s": round(elapsed, 1),
            }
        if self._last is None or now - self._last[0] >= 1.0:
            self._last = (now, received, written)
        return self.rates


@router.get(
    "/api/status",
    summary="Broker connection, subscriptions, ingest rates, stream lag, last backfill",
    responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}},
)
async def status(request: Request, rt: RuntimeDep, service: ServiceDep) -> dict[str, Any]:
    published, stream = await _redis_status(rt)
    ingest: dict[str, Any] | None = rt.ingest.status() if rt.ingest is not None else published
    state = ingest.get("feed_state") if ingest else None
    database: dict[str, Any] = {"up": True, "error": None}
    try:
        with db_errors("counting subscriptions"):
            subscriptions = await rt.pool.fetchval(sql_instruments.COUNT_SUBSCRIPTIONS)
    except StorageError as exc:
        if isinstance(exc, QueryFailed):  # not a database that is down: a bug, answered 500
            raise
        # the status is what one reads while something is down: answer with what is known
        database = {"up": False, "error": exc.code}
        subscriptions = ingest.get("subscriptions") if ingest else None
    rates: IngestRates = request.app.state.ingest_rates
    return {
        "broker": {"name": rt.broker.name if rt.broker else None, "state": state or "unknown"},
        "database": database,
        "tasks": rt.supervisor.status() if rt.supervisor is not None else {},
        "subscriptions": subscriptions,
        "ingest": ingest,
        "ingest_rates": rates.update(ingest),
        "stream": stream,
        "last_backfill": service.backfiller.status() if service.backfiller else None,
        "websocket_clients": request.app.state.hub.client_count,
        # alerts and option snapshots run in one replica at a time: here, or another's
        "singletons": request.app.state.singletons.status(),
        "cluster": await _cluster(rt),
    }


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics (default registry)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
