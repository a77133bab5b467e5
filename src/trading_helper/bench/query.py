"""``trading-helper bench query``: latency of the merged read path and of the API over HTTP.

Loads :mod:`trading_helper.bench.query_data` into a throwaway database (``th_bench_<random>``,
dropped afterwards; the server's flavour, TimescaleDB or plain PostgreSQL, the same JSON), then times, per random instrument: one day of 1m through ``read_candles``,
30 days of 15m, a year of 1d, and one day of 1m through ``GET /api/candles`` end to end (uvicorn
on 127.0.0.1, keep-alive HTTP client; the request also runs gap detection against the simulator
broker, which the fully covered dataset never needs to call).
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import asyncpg
import uvicorn
from pydantic import SecretStr

from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.bench.query_data import load_sim_dataset
from trading_helper.bench.scratch import scratch_database
from trading_helper.brokers.sim import SimBroker
from trading_helper.config import Settings
from trading_helper.storage import sql_candles
from trading_helper.storage.db import create_pool
from trading_helper.timeframes import IST

WARMUP = 20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _timed(samples: int, call: Callable[[int], Awaitable[int]]) -> tuple[list[float], int]:
    """Milliseconds per call (after a warm-up) and the rows the timed calls returned."""
    for n in range(WARMUP):
        await call(n)
    times, rows = [], 0
    for n in range(samples):
        began = time.perf_counter()
        rows += await call(n)
        times.append((time.perf_counter() - began) * 1000)
    return times, rows


def _day(d: date) -> tuple[datetime, datetime]:
    start = datetime(d.year, d.month, d.day, tzinfo=IST)
    return start, start + timedelta(days=1)


async def _serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only for such sockets
    # (uvicorn's own sockets have it); without it every answer waits for a delayed ACK (~40 ms)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def run_query_bench(settings: Settings, *, instruments: int, days: int, samples: int) -> dict[str, Any]:
    began = time.perf_counter()
    async with scratch_database(settings.DATABASE_URL) as dsn:
        pool = await create_pool(dsn, min_size=2, max_size=4)
        try:
            flavour, data = await load_sim_dataset(pool, instruments, days)
            ids = data.instrument_ids
            loaded = time.perf_counter() - began
            result: dict[str, Any] = {
                "database": urlsplit(dsn).path.lstrip("/") + " (dropped)",
                "flavour": flavour,
                "instruments": len(ids),
                "days": days,
                "trading_days": len(data.days),
                "rows": data.rows,
                "load_seconds": round(loaded, 1),
                "samples": samples,
            }
            rng = random.Random(42)
            picks = [(rng.choice(ids), rng.choice(data.days)) for _ in range(samples + WARMUP)]
            month_from, _ = _day(data.days[0])
            _, month_to = _day(data.days[-1])
            year_from, _ = _day(data.year_days[0])

            async with pool.acquire() as conn:

                async def day_1m(n: int) -> int:
                    iid, d = picks[n]
                    return len(await conn.fetch(sql_candles.READ, iid, "1m", *_day(d)))

                async def month_15m(n: int) -> int:
                    return len(await conn.fetch(sql_candles.READ, picks[n][0], "15m", month_from, month_to))

                async def year_1d(n: int) -> int:
                    return len(await conn.fetch(sql_candles.READ, picks[n][0], "1d", year_from, month_to))

                for name, call in (
                    ("read_1m_day", day_1m),
                    ("read_15m_month", month_15m),
                    ("read_1d_year", year_1d),
                ):
                    times, rows = await _timed(samples, call)
                    result[f"{name}_p50_ms"] = round(percentile(times, 0.5), 3)
                    result[f"{name}_p99_ms"] = round(percentile(times, 0.99), 3)
                    result[f"{name}_candles_avg"] = round(rows / samples, 1)

            result.update(await _api_bench(settings, pool, picks, samples))
        finally:
            await pool.close()
    result["total_seconds"] = round(time.perf_counter() - began, 1)
    return result


class _KeepAliveClient:
    """A minimal HTTP/1.1 keep-alive GET client on one connection, so the timings are the server's
    and the network's, not a general-purpose client's bookkeeping."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: str) -> None:
        self.reader, self.writer, self.headers = reader, writer, headers

    @classmethod
    async def open(cls, url: str, headers: dict[str, str]) -> _KeepAliveClient:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        lines = "".join(f"{k}: {v}\r\n" for k, v in {"Host": parts.netloc, **headers}.items())
        return cls(reader, writer, lines)

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.headers}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(
            int(v)
            for k, _, v in (line.partition(":") for line in lines[1:])
            if k.strip().lower() == "content-length"
        )
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def _api_bench(
    settings: Settings, pool: asyncpg.Pool, picks: list[tuple[int, date]], samples: int
) -> dict[str, Any]:
    token = "bench-" + str(random.Random().getrandbits(64))
    app_settings = settings.model_copy(update={"API_TOKEN": SecretStr(token), "BROKER": "sim"})
    broker = SimBroker(app_settings)
    app = create_app(Runtime(app_settings, pool, None, broker, None))
    server, task, url = await _serve(app)
    try:
        client = await _KeepAliveClient.open(url, {"Authorization": f"Bearer {token}"})
        try:

            async def day_api(n: int) -> int:
                iid, d = picks[n]
                start, end = _day(d)
                query = urlencode(
                    {
                        "instrument": f"id:{iid}",
                        "interval": "1m",
                        "from": start.isoformat(),
                        "to": end.isoformat(),
                    }
                )
                status, body = await client.get(f"/api/candles?{query}")
                if status != 200:
                    raise RuntimeError(f"GET /api/candles answered {status}: {body[:200]!r}")
                return body.count(b'"time"')

            times, rows = await _timed(samples, day_api)
        finally:
            await client.close()
    finally:
        server.should_exit = True
        await task
        await broker.aclose()
    return {
        "api_1m_day_p50_ms": round(percentile(times, 0.5), 3),
        "api_1m_day_p99_ms": round(percentile(times, 0.99), 3),
        "api_1m_day_candles_avg": round(rows / samples, 1),
        "api_broker_calls": broker.history_calls,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
