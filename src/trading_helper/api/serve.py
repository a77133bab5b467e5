"""``trading-helper serve``: the API (and, by default, the ingest service) in one process.

The process owns the pool, the Redis client and the one broker instance, and hands them to
``create_app`` through a :class:`Runtime`. Subscriptions persisted in the database are
re-subscribed by the ingest service when it starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis.asyncio as aioredis
import uvicorn

from trading_helper import redact
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.brokers.registry import build_broker
from trading_helper.config import Settings
from trading_helper.ingest.service import IngestService
from trading_helper.storage.db import create_pool

log = logging.getLogger(__name__)

async def serve(settings: Settings, *, host: str | None = None, port: int | None = None,
                ingest: bool = True, redis: aioredis.Redis | None = None,
                on_ready: Callable[[], None] | None = None) -> None:
    """Serve until interrupted. ``redis``: a client to use instead of ``REDIS_URL`` (the demo's
    in-process stand-in); ``on_ready``: called once the ingest service runs, before serving."""
    pool = await create_pool(settings.DATABASE_URL, min_size=1, max_size=10)
    redis = redis if redis is not None else aioredis.from_url(settings.REDIS_URL)
    broker = build_broker(settings)
    service = IngestService(settings, pool, redis, broker) if ingest else None
    try:
        app = create_app(Runtime(settings, pool, redis, broker, service))
        if service is not None:
            await service.start()
        config = uvicorn.Config(app, host=host or settings.API_HOST, port=port or settings.API_PORT,
                                log_level=settings.LOG_LEVEL.lower(), lifespan="on")
        # after Config, which sets uvicorn's logging up: secrets (the WebSocket's ?token= too) and
        # text from outside never reach a log line as they are
        redact.install()
        log.info("serving on http://%s:%d (docs at /docs)", config.host, config.port)
        if on_ready is not None:
            on_ready()
        await uvicorn.Server(config).serve()
    finally:
        if service is not None:
            await service.stop()
        await broker.aclose()
        await redis.aclose()
        await pool.close()
