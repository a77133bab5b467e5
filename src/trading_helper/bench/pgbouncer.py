"""A pgBouncer of our own (``pgbouncer`` on PATH, Debian's package), and ``trading-helper bench
pgbouncer``: what the API's read path costs through it in transaction pooling.

:func:`running_pgbouncer` starts one in front of a database (its tests use it too). The bench loads
the query bench's dataset (:mod:`trading_helper.bench.query_data`) into a throwaway database and
times one day of 1m candles (``read_candles``, acquired from the pool per query as the API does)
three ways: a direct pool with asyncpg's statement cache (the reference), a direct pool without it
(what ``PGBOUNCER=true`` gives up alone), and our pool with ``pgbouncer=True`` through pgBouncer.
Each: serial latency (p50, p99) and the queries per second of ``concurrency`` callers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from trading_helper.bench.query import _day, _timed, percentile
from trading_helper.bench.query_data import load_sim_dataset
from trading_helper.bench.scratch import scratch_database
from trading_helper.config import Settings
from trading_helper.errors import ConfigError
from trading_helper.storage import sql_candles
from trading_helper.storage.db import create_pool

START_TIMEOUT_S = 10.0


def _binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/bin/pgbouncer") if os.path.exists(p)), None
    )
    if found is None:
        raise ConfigError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running_pgbouncer(
    dsn: str, *, pool_size: int = 2, aliases: dict[str, int] | None = None
) -> Iterator[str]:
    """pgBouncer in transaction pooling in front of ``dsn``'s database (``pool_size`` server
    connections); yields the DSN of that database through it. ``aliases``: more names for the
    same database, each with its own pool size (``{"single": 1}``: ``.../single``).

    Run as root it becomes the ``postgres`` user (pgBouncer refuses root), so its folder is a
    world-writable temporary one. ``auth_type = any``: the server's own login (from ``dsn``)."""
    binary = _binary()
    parts = urlsplit(dsn)
    database = parts.path.lstrip("/")
    login = f"user={parts.username or 'postgres'}" + (f" password={parts.password}" if parts.password else "")
    server = f"host={parts.hostname or '127.0.0.1'} port={parts.port or 5432} dbname={database} {login}"
    folder = Path(tempfile.mkdtemp(prefix="th-pgbouncer-"))
    os.chmod(folder, 0o777)
    port = _free_port()
    databases = [f"{database} = {server} pool_size={pool_size}"]
    databases += [f"{name} = {server} pool_size={size}" for name, size in (aliases or {}).items()]
    ini = folder / "pgbouncer.ini"
    ini.touch(mode=0o600)  # it may hold the server's password: readable by pgBouncer's user only
    if os.geteuid() == 0:
        shutil.chown(ini, "postgres")
    ini.write_text(
        "[databases]\n"
        + "\n".join(databases)
        + f"""

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
max_client_conn = 500
default_pool_size = {pool_size}
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
{"user = postgres" if os.geteuid() == 0 else ""}
"""
    )
    output = (folder / "output").open("wb")
    proc = subprocess.Popen([binary, str(ini)], stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ConfigError(
                    f"pgbouncer did not start: {(folder / 'output').read_text(errors='replace')[-500:]}"
                )
            time.sleep(0.05)
        netloc = f"{parts.username or 'postgres'}@127.0.0.1:{port}"
        yield urlunsplit((parts.scheme, netloc, "/" + database, "", ""))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        output.close()
        shutil.rmtree(folder, ignore_errors=True)


async def _throughput(
    pool: asyncpg.Pool, call: Callable[[asyncpg.Pool, int], Awaitable[int]], *, workers: int, seconds: float
) -> float:
    """Queries per second of ``workers`` callers looping for ``seconds``."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        n = w
        while time.perf_counter() < stop:
            await call(pool, n)
            done += 1
            n += workers

    began = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    return done / (time.perf_counter() - began)


async def run_pgbouncer_bench(
    settings: Settings, *, instruments: int, days: int, samples: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    began = time.perf_counter()
    async with scratch_database(settings.DATABASE_URL) as dsn:
        loader = await create_pool(dsn, min_size=1, max_size=4)
        try:
            flavour, data = await load_sim_dataset(loader, instruments, days)
            ids = data.instrument_ids
        finally:
            await loader.close()
        rng = random.Random(42)
        picks = [(rng.choice(ids), rng.choice(data.days)) for _ in range(samples + 1000)]

        async def day_1m(pool: asyncpg.Pool, n: int) -> int:
            iid, d = picks[n % len(picks)]
            return len(await pool.fetch(sql_candles.READ, iid, "1m", *_day(d)))

        server_connections = max(1, concurrency // 2)  # fewer than the clients: they share them
        result: dict[str, Any] = {
            "flavour": flavour,
            "instruments": len(ids),
            "trading_days": len(data.days),
            "samples": samples,
            "concurrency": concurrency,
            "pgbouncer_server_connections": server_connections,
        }
        with running_pgbouncer(dsn, pool_size=server_connections) as bounced:
            modes: dict[str, Callable[[], Awaitable[asyncpg.Pool]]] = {
                "direct_cached": lambda: create_pool(dsn, min_size=1, max_size=concurrency),
                "direct_no_cache": lambda: create_pool(
                    dsn, min_size=1, max_size=concurrency, statement_cache_size=0
                ),
                "pgbouncer": lambda: create_pool(bounced, min_size=1, max_size=concurrency, pgbouncer=True),
            }
            for name, make in modes.items():
                pool = await make()
                try:
                    times, rows = await _timed(samples, functools.partial(day_1m, pool))
                    result[f"{name}_p50_ms"] = round(percentile(times, 0.5), 3)
                    result[f"{name}_p99_ms"] = round(percentile(times, 0.99), 3)
                    result[f"{name}_candles_avg"] = round(rows / samples, 1)
                    result[f"{name}_qps"] = round(
                        await _throughput(pool, day_1m, workers=concurrency, seconds=seconds), 1
                    )
                finally:
                    await pool.close()
        for name in ("direct_no_cache", "pgbouncer"):
            result[f"{name}_p50_ratio"] = round(result[f"{name}_p50_ms"] / result["direct_cached_p50_ms"], 3)
            result[f"{name}_qps_ratio"] = round(result[f"{name}_qps"] / result["direct_cached_qps"], 3)
    result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["total_seconds"] = round(time.perf_counter() - began, 1)
    return result
