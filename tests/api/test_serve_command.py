"""`trading-helper serve` as a user runs it, in a subprocess: a port in use is one line and a
non-zero exit; it starts with PostgreSQL down (through the fault proxy), answers 503 saying what is
down, catches up when the database returns, keeps ticks in Redis through an outage, and stops
within 10 s on SIGTERM or SIGINT whatever state the database and Redis are in."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tests.api.conftest import API_TOKEN, closed_port, ingest_redis_url
from tests.db import fresh_database, with_database
from tests.e2e.helpers import eventually
from tests.faults.proxy import FaultProxy
from tests.services import _free_port
from tests.storage.helpers import reset_market_data
from trading_helper.brokers.sim import SimBroker
from trading_helper.config import Settings
from trading_helper.ingest import keys
from trading_helper.storage.instruments import sync_instruments

STOP_WITHIN_S = 10.0
SIM_INSTRUMENTS = 5


@dataclass
class Serve:
    proc: asyncio.subprocess.Process
    port: int
    log: Path
    client: httpx.AsyncClient

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> float:
        """Send ``sig``; the seconds until the process exited (fails beyond STOP_WITHIN_S)."""
        began = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), STOP_WITHIN_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            pytest.fail(
                f"serve did not stop within {STOP_WITHIN_S:g} s of {sig.name}:\n{self.output()[-3000:]}"
            )
        took = time.monotonic() - began
        assert code == 0, f"exit {code} after {sig.name}:\n{self.output()[-3000:]}"
        return took


def serve_env(database_url: str, redis_url: str, stream: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "API_"))}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        BROKER="sim",
        SIM_INSTRUMENTS=str(SIM_INSTRUMENTS),
        SIM_TICKS_PER_SECOND="100",
        TICK_STREAM=stream,
        API_TOKEN=API_TOKEN,
        REFRESH_INTERVAL_S="1",
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


@asynccontextmanager
async def serving(tmp_path: Path, env: dict[str, str], *args: str) -> AsyncIterator[Serve]:
    """``trading-helper serve --port <free> ARGS`` (``--no-ingest`` ...), once it answers."""
    port = _free_port()
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "trading_helper.cli",
            "serve",
            "--port",
            str(port),
            *args,
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    run = Serve(
        proc,
        port,
        log,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"}
        ),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.returncode is None, f"serve exited ({proc.returncode}):\n{run.output()[-3000:]}"
            try:
                await run.client.get("/health")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"serve never answered:\n{run.output()[-3000:]}"
                await asyncio.sleep(0.1)
        yield run
    finally:
        await run.client.aclose()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        redis = aioredis.from_url(env["REDIS_URL"], socket_connect_timeout=1)
        with contextlib.suppress(RedisError, OSError):  # Redis "down" in some tests
            await redis.delete(env["TICK_STREAM"], keys.STATUS, keys.QUOTES)
        await redis.aclose()


async def prepare(db_pool: asyncpg.Pool) -> None:
    """The simulator's instruments, all subscribed, as the API would have stored them."""
    await reset_market_data(db_pool)
    async with db_pool.acquire() as conn:
        await sync_instruments(
            conn, "sim", await SimBroker(Settings(SIM_INSTRUMENTS=SIM_INSTRUMENTS)).fetch_instruments()
        )
        await conn.execute("TRUNCATE subscriptions, live_coverage")
        await conn.execute(
            "INSERT INTO subscriptions (instrument_id) SELECT instrument_id FROM instrument_broker_ids "
            "WHERE broker = 'sim'"
        )


def through(proxy: FaultProxy, dsn: str) -> str:
    parts = urlsplit(dsn)
    return with_database(
        f"postgresql://{parts.username or 'postgres'}@127.0.0.1:{proxy.port}/x", parts.path[1:]
    )


async def test_a_port_in_use_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, db_dsn: str, redis_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = serve_env(db_dsn, ingest_redis_url(redis_url), f"th:serve:{uuid.uuid4().hex[:8]}")
        began = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "trading_helper.cli",
            "serve",
            "--port",
            str(port),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 5.0)
        took = time.monotonic() - began
    assert proc.returncode == 1 and took < 5.0, (proc.returncode, took)
    lines = err.decode().strip().splitlines()
    assert lines == [
        f"error: port {port} on 127.0.0.1 is in use (another server, or another trading-helper, "
        f"listens there): stop it, or choose another port (--port or API_PORT)"
    ], err.decode()
    assert out == b""


async def test_serve_starts_with_postgres_down_and_catches_up(
    tmp_path: Path, db_dsn: str, db_pool: asyncpg.Pool, redis_url: str
) -> None:
    await prepare(db_pool)
    stream = f"th:serve:{uuid.uuid4().hex[:8]}"
    async with FaultProxy("127.0.0.1", 5432) as proxy:
        proxy.cut()  # PostgreSQL "down" before serve starts
        env = serve_env(through(proxy, db_dsn), ingest_redis_url(redis_url), stream)
        async with serving(tmp_path, env) as run:
            client = run.client
            health = await client.get("/health")
            assert health.status_code == 503 and health.json()["code"] == "database_unavailable", health.text
            assert health.json()["component"] == "database"
            candles = await client.get("/api/candles", params={"instrument": "id:1", "interval": "1m"})
            assert candles.status_code == 503 and candles.json()["code"] == "database_unavailable", (
                candles.text
            )
            status = (await client.get("/api/status")).json()
            assert status["database"] == {"up": False, "error": "database_unavailable"}
            start = status["tasks"]["start"]  # retried: between two tries, or in one (a few ms)
            assert status["ingest"]["db_down"] is True and start["state"] in ("restarting", "running"), start
            assert "feed" not in status["tasks"]  # it starts once the subscriptions are read

            proxy.heal()  # the database returns: the start work completes, ticks flow

            async def healthy() -> bool:
                return (await client.get("/health")).status_code == 200

            await eventually(healthy, "/health 200 once PostgreSQL is back", within_s=20)

            async def ingest() -> dict[str, object]:
                body: dict[str, object] = (await client.get("/api/status")).json()["ingest"]
                return body

            async def written_at_least(n: int) -> bool:
                return int((await ingest())["written"]) >= n  # type: ignore[call-overload]

            await eventually(lambda: written_at_least(50), "ticks written after the start", within_s=20)
            status = (await client.get("/api/status")).json()
            assert (
                status["tasks"]["start"]["state"] == "done" and status["tasks"]["feed"]["state"] == "running"
            )
            assert status["subscriptions"] == SIM_INSTRUMENTS

            proxy.cut()  # down while running: ticks wait in the Redis stream
            await eventually(lambda: ingest_flag(client, "db_down"), "db_down reported", within_s=10)
            before = await ingest()
            await asyncio.sleep(1.5)
            during = await ingest()
            assert int(during["received"]) > int(before["received"])  # type: ignore[call-overload]
            assert during["written"] == before["written"]
            assert (await client.get("/health")).json()["code"] == "database_unavailable"
            proxy.heal()
            received = int(during["received"])  # type: ignore[call-overload]
            await eventually(lambda: written_at_least(received), "the backlog written", within_s=20)
            stored = await db_pool.fetchval("SELECT count(*) FROM tick_data")
            assert stored >= received
            await run.stop(signal.SIGTERM)
        assert "Traceback" not in run.output()


async def ingest_flag(client: httpx.AsyncClient, name: str) -> bool:
    return bool((await client.get("/api/status")).json()["ingest"][name])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_serve_stops_within_10_s_with_postgres_and_redis_down(
    tmp_path: Path, db_dsn: str, sig: signal.Signals
) -> None:
    async with FaultProxy("127.0.0.1", 5432) as proxy:
        proxy.cut()
        env = serve_env(
            through(proxy, db_dsn), f"redis://127.0.0.1:{closed_port()}/0", f"th:serve:{uuid.uuid4().hex[:8]}"
        )
        async with serving(tmp_path, env) as run:
            health = (await run.client.get("/health")).json()
            assert {p["component"] for p in health["problems"]} >= {"database", "redis"}, health
            await asyncio.sleep(1.0)  # the start work, the writer and the live channel are all retrying
            took = await run.stop(sig)
        assert took < STOP_WITHIN_S and "Traceback" not in run.output(), run.output()[-3000:]


async def test_a_database_without_the_schema_is_one_clear_error(
    tmp_path: Path, admin_dsn: str, redis_url: str
) -> None:
    async with fresh_database(admin_dsn, flavour=None) as empty:
        env = serve_env(
            empty, ingest_redis_url(redis_url), f"th:serve:{uuid.uuid4().hex[:8]}", LOG_LEVEL="ERROR"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "trading_helper.cli",
            "serve",
            "--port",
            str(_free_port()),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 15.0)
    assert proc.returncode == 1
    assert err.decode().strip().splitlines()[-1] == (
        "error: the database has no Trading Helper schema: run `trading-helper db migrate` first"
    ), err.decode()
    assert "Traceback" not in err.decode()
