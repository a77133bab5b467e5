"""``create_app(runtime)``: the FastAPI application of Trading Helper.

Public: ``/health*``, ``/metrics``, the chart page at ``/`` and ``/static`` (when the package ships
``api/static``), and the OpenAPI docs. Everything under ``/api`` needs ``Authorization: Bearer
<API_TOKEN>``; the WebSocket takes ``?token=<API_TOKEN>``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trading_helper import __version__, clock, redact
from trading_helper.alerts.service import AlertService
from trading_helper.api.auth import BearerGate, api_token, require_token
from trading_helper.api.deps import refuse_unknown_query
from trading_helper.api.docs import install_docs
from trading_helper.api.errors import install_error_handlers
from trading_helper.api.hub import TickHub
from trading_helper.api.limits import BodyLimit
from trading_helper.api.openapi import PROTECTED
from trading_helper.api.routes import (
    alerts,
    candles,
    export,
    health,
    indicators,
    instruments,
    options,
    quotes,
    reconcile,
    status,
)
from trading_helper.api.runtime import Runtime
from trading_helper.api.singletons import Job, Singletons
from trading_helper.api.ws import router as ws_router
from trading_helper.api.ws_options import router as ws_options_router
from trading_helper.api.ws_replay import router as replay_router
from trading_helper.candles.calendar import years_between
from trading_helper.candles.service import CandleService
from trading_helper.errors import DatabaseBusy, DatabaseUnavailable, TradingHelperError
from trading_helper.ingest import keys
from trading_helper.options.recorder import OptionsRecorder
from trading_helper.options.service import OptionsService
from trading_helper.supervisor import Supervisor

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")

HTTP_REQUESTS = Counter("th_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_SECONDS = Histogram(
    "th_http_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)

DESCRIPTION = """
Ticks, OHLCV+OI candles and live quotes for Indian markets (Kite, Fyers, simulator).

**Authentication**: every `/api` route needs `Authorization: Bearer <API_TOKEN>`; the WebSocket
`/api/ws/ticks` takes `?token=<API_TOKEN>`. When `API_TOKEN` is not set, the server generates one at
start and prints it once.

**Times**: ISO 8601. Inputs without an offset are taken as IST (Asia/Kolkata, +05:30); answers carry
their offset (candles in IST).

**Candles** come from one read path: live candles where the bucket was fully captured, else the
broker's history (fetched on demand, only for ranges inside exchange sessions that were neither
captured nor fetched before), else the partial live candle.

**WebSocket** `/api/ws/ticks?token=...`: send `{"action": "subscribe", "instruments": [1, 2],
"intervals": ["1m"]}`; receive `{"type": "tick", "data": {...}}` and `{"type": "candle", "interval":
"1m", "data": {...}}`. A client that cannot keep up is disconnected (close code 1013).
`/api/ws/replay?token=...&from=...&to=...&speed=1..10000|max` speaks the same protocol over stored
ticks, in exchange-time order, with `hole` markers where capture was down, then `replay_end`.
"""


class RequestMetrics:
    """Counts and times every HTTP request by its route template (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        code = 500

        async def send_status(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_REQUESTS.labels(scope["method"], route, str(code)).inc()
            HTTP_SECONDS.labels(route).observe(time.perf_counter() - began)


def cors_origins(value: str) -> list[str]:
    """Configured origins; ``*`` is refused (the API carries a bearer token, not cookies, but an
    open CORS policy would still let any page script it with a leaked token)."""
    origins = [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
    if "*" in origins:
        log.warning("CORS_ORIGINS contains '*': ignored; list the allowed origins instead")
    return [o for o in origins if o != "*"]


def create_app(
    runtime: Runtime, *, live_channel: str = keys.LIVE_CHANNEL, quotes_key: str = keys.QUOTES
) -> FastAPI:
    """The application over ``runtime``; ``live_channel`` is the Redis pub/sub channel of live ticks,
    ``quotes_key`` the hash of latest quotes the option chains read."""
    token, generated = api_token(runtime.settings)
    if generated:
        log.warning("API_TOKEN is not set: generated one for this process: %s", token)
    redact.register(token)  # after the one line that shows a generated token
    service = CandleService(runtime.pool, runtime.broker, read_pool=runtime.read_pool)
    hub = TickHub(runtime.redis, channel=live_channel)
    options_service = _options(runtime, service, quotes_key)
    alert_service = (
        AlertService(
            runtime.settings,
            runtime.pool,
            runtime.redis,
            service,
            channel=live_channel,
            publish=hub.broadcast,
        )
        if runtime.redis is not None
        else None
    )
    supervisor = runtime.supervisor if runtime.supervisor is not None else Supervisor()
    # alerts and snapshots run in one replica at a time (api/singletons.py)
    singletons = Singletons(runtime.redis, supervisor, ttl_s=runtime.settings.LEASE_TTL_S)
    if alert_service is not None:
        singletons.add(
            f"alerts:{live_channel}",
            Job("alerts", alert_service.evaluate, (TradingHelperError,)),
            Job("alert-delivery", alert_service.deliver_triggers, (TradingHelperError,)),
        )
    if runtime.supervisor is not None and options_service.recorder is not None:
        recorder = options_service.recorder
        singletons.add(
            f"option-snapshots:{quotes_key}",
            Job("option-snapshots", recorder.run, (DatabaseUnavailable, DatabaseBusy)),
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        warm = asyncio.create_task(_warm_calendar(service), name="calendar-warmup")
        await singletons.start()
        try:
            yield
        finally:
            await singletons.stop()
            warm.cancel()
            await asyncio.gather(warm, return_exceptions=True)
            await hub.stop()

    app = FastAPI(
        title="Trading Helper API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )  # served from the package's files: install_docs below
    app.state.runtime = runtime
    app.state.api_token = token
    app.state.token_generated = generated
    app.state.candles = service
    app.state.hub = hub
    app.state.options = options_service
    app.state.alerts = alert_service
    app.state.singletons = singletons
    app.state.ingest_rates = status.IngestRates()

    install_error_handlers(app)
    # inside CORS (a 401 or 413 still carries its headers), outside everything that reads a body
    app.add_middleware(BodyLimit, max_bytes=runtime.settings.API_MAX_BODY_BYTES)
    app.add_middleware(BearerGate, token=token)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=cors_origins(runtime.settings.CORS_ORIGINS),
        allow_methods=["GET", "POST", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )
    app.add_middleware(RequestMetrics)

    app.include_router(health.router)
    app.include_router(status.metrics_router)
    protected = [Depends(require_token), Depends(refuse_unknown_query)]
    routers = (
        instruments.router,
        candles.router,
        export.router,
        indicators.router,
        alerts.router,
        quotes.router,
        reconcile.router,
        options.router,
        status.router,
    )
    for router in routers:
        app.include_router(router, dependencies=protected, responses=PROTECTED)
    app.include_router(ws_router)
    app.include_router(ws_options_router)
    app.include_router(replay_router)
    install_docs(app)

    if STATIC_DIR.is_dir():
        # mounted last: every route above wins; "/" serves index.html
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="chart")
    else:

        @app.get("/", include_in_schema=False)
        async def root() -> dict[str, str]:
            return {"message": "Trading Helper API", "docs": "/docs"}

    return app


def _options(runtime: Runtime, candles: CandleService, quotes_key: str) -> OptionsService:
    """The option chains' service, and its recorder of followed chains when Redis is configured."""
    s = runtime.settings
    recorder = None
    if runtime.redis is not None:
        recorder = OptionsRecorder(
            runtime.pool,
            runtime.redis,
            rate=s.OPTIONS_RATE,
            interval_s=s.OPTIONS_SNAPSHOT_INTERVAL_S,
            ingest=runtime.ingest,
            quotes_key=quotes_key,
        )
    return OptionsService(
        runtime.pool, runtime.redis, candles, recorder, rate=s.OPTIONS_RATE, quotes_key=quotes_key
    )


async def _warm_calendar(service: CandleService) -> None:
    """Load this year's NSE sessions in the background, so the first chart does not wait for it."""
    now = clock.now()
    try:
        await service.sessions.ensure(service.pool, "NSE", years_between(now, now))
    except Exception as exc:  # a down database is reported by /health/db; the first request retries
        log.info("calendar warm-up skipped: %s", exc)
