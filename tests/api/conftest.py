"""The API over real sockets: uvicorn on 127.0.0.1, a real database and Redis, the fake Kite."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from tests.api.server import serve
from tests.fakes.kite_server import FakeKiteServer
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.brokers.kite.broker import KiteBroker
from trading_helper.brokers.tokens import save_token
from trading_helper.config import Settings

API_TOKEN = "test-api-token-0123456789"
ORIGIN = "http://localhost:3000"


def api_redis_url(redis_url: str) -> str:
    """Redis database 13: the quotes hash of these tests stays apart from other suites' data."""
    parts = urlsplit(redis_url)
    return urlunsplit((parts.scheme, parts.netloc, "/13", parts.query, parts.fragment))


def closed_port() -> int:
    """A port nothing listens on (a server that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ingest_redis_url(redis_url: str) -> str:
    """Redis database 12: the status hash the ingest services of the API tests publish stays
    apart from database 13 (where the ``api`` fixture expects no ingest) and other suites' data."""
    parts = urlsplit(redis_url)
    return urlunsplit((parts.scheme, parts.netloc, "/12", parts.query, parts.fragment))


@asynccontextmanager
async def authorised(app: FastAPI, *, timeout_s: float = 30) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` served on a real socket, and a client for it that carries the API token."""
    async with (
        serve(app) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=timeout_s
        ) as client,
    ):
        yield client


@dataclass
class Api:
    url: str
    client: httpx.AsyncClient  # authorised
    runtime: Runtime
    kite: FakeKiteServer
    redis: aioredis.Redis
    channel: str
    app: FastAPI


@asynccontextmanager
async def running_api(
    db_pool: asyncpg.Pool, redis_url: str, home: Path, kite: FakeKiteServer, **settings: Any
) -> AsyncIterator[Api]:
    """The application with a logged-in Kite broker (``kite``), Redis database 13 and a live
    channel of its own, served on a real socket with an authorised client, its instruments synced.
    ``settings`` are added to the fake Kite's (``home`` holds the token file)."""
    config: Settings = kite.settings(home, API_TOKEN=API_TOKEN, **settings)
    save_token(config, "kite", kite.access_token)
    broker = KiteBroker(config)
    redis = aioredis.from_url(api_redis_url(redis_url))
    runtime = Runtime(settings=config, pool=db_pool, redis=redis, broker=broker, ingest=None)
    channel = f"th:live:test:{uuid.uuid4().hex[:8]}"
    app = create_app(runtime, live_channel=channel)
    try:
        async with authorised(app) as client:
            synced = await client.post("/api/instruments/sync")
            assert synced.status_code == 200, synced.text
            url = str(client.base_url).rstrip("/")  # httpx keeps a base URL with its slash
            yield Api(url, client, runtime, kite, redis, channel, app)
    finally:
        await broker.aclose()
        await redis.aclose()


@pytest.fixture(scope="module")
async def api(
    db_pool: asyncpg.Pool, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    home = tmp_path_factory.mktemp("api-kite")
    async with (
        FakeKiteServer() as kite,
        running_api(db_pool, redis_url, home, kite, CORS_ORIGINS=f"{ORIGIN},*") as running,
    ):
        yield running
