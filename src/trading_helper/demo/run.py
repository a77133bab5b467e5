"""``trading-helper demo``: the whole system on a machine with only Python.

* Settings: read once, like every command (the environment and ``.env``).
* Database: ``DATABASE_URL`` when set, else a PostgreSQL installed by pip
  (:mod:`.embedded`) with its data in ``./var/pgdata``, kept across runs.
* Redis: ``REDIS_URL`` when set, else one answering on 127.0.0.1:6379, else an in-process stand-in
  (fakeredis: the same stream, consumer-group and pub/sub calls, in memory, without durability;
  the demo says so).
* Broker: the simulator, for ``--instruments`` instruments, all subscribed.
* History: the last days of 1m candles are backfilled from the simulator's history through the
  same gap detection and backfill as a real broker (only the first run fetches them).
* Then the API, the chart page and the ingest service run until Ctrl-C (or SIGTERM), which stops
  them in order (feed, writer drain, pools, database server) within 10 s.
"""

from __future__ import annotations

import os
import secrets
import socket
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis.asyncio as aioredis
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trading_helper import runner
from trading_helper.brokers.sim import SimBroker
from trading_helper.config import Settings, get_settings
from trading_helper.demo.state import IN_PROCESS, clear_state, write_state
from trading_helper.ingest.redisconn import redis_client
from trading_helper.listen import listen_socket
from trading_helper.redact import redact
from trading_helper.storage import sql_instruments
from trading_helper.storage.db import create_pool
from trading_helper.storage.instruments import lookup_tokens, sync_instruments
from trading_helper.storage.migrate import migrate

HISTORY_DAYS = 4


def _local_redis_answers() -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", 6379)) == 0


def _given(settings: Settings, name: str) -> str | None:
    """The setting's value when the environment or .env sets it, else None (the demo's own default)."""
    return str(getattr(settings, name)) if name in settings.model_fields_set else None


def demo_token(var: Path, settings: Settings) -> str:
    """``API_TOKEN`` when set, else one kept in ``var/api_token`` (0600) so a browser that stored it
    keeps working across restarts."""
    configured = settings.API_TOKEN.get_secret_value().strip()
    if configured:
        return configured
    path = var / "api_token"
    if path.is_file():
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


async def _open_redis(
    console: Console, stack: AsyncExitStack, url: str | None, *, in_process: bool = False
) -> tuple[aioredis.Redis, str]:
    """``url`` (REDIS_URL when set), else one answering on 127.0.0.1:6379, else the in-process stand-in."""
    url = None if in_process else url
    if url is None and not in_process and _local_redis_answers():
        url = "redis://127.0.0.1:6379/0"
    if url is not None:
        client = redis_client(url)
        stack.push_async_callback(client.aclose)
        return client, url
    import fakeredis

    console.print(
        ("Using" if in_process else "[yellow]No Redis found[/yellow]: using")
        + " an in-process queue (ticks not yet written are lost if the demo is killed; set REDIS_URL "
        "for a durable buffer). `trading-helper status` run in this folder asks the demo's API."
    )
    fake = fakeredis.FakeAsyncRedis()
    stack.push_async_callback(fake.aclose)
    return fake, IN_PROCESS


async def _load_history(console: Console, settings: Settings, dsn: str, ids: list[int]) -> None:
    from trading_helper.candles.service import CandleService

    pool = await create_pool(dsn, min_size=1, max_size=4)
    try:
        service = CandleService(pool, SimBroker(settings))
        end = datetime.now(UTC)
        start = end - timedelta(days=HISTORY_DAYS)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(f"loading {HISTORY_DAYS} days of simulated 1m history", total=len(ids))
            for iid in ids:
                await service.get_candles(f"id:{iid}", "1m", start, end)
                progress.advance(task)
    finally:
        await pool.close()


async def run_demo(
    *,
    port: int,
    instruments: int,
    var: Path,
    console: Console,
    in_process_redis: bool = False,
    sock: socket.socket | None = None,
) -> None:
    from trading_helper.api.serve import serve

    configured = get_settings()
    given_dsn = _given(configured, "DATABASE_URL")
    given_redis = _given(configured, "REDIS_URL")
    if sock is None:  # first: a port in use fails before anything starts
        sock = listen_socket("127.0.0.1", port)
    async with AsyncExitStack() as stack:
        stack.callback(sock.close)
        with console.status("preparing the database") as status:
            dsn = given_dsn
            if dsn is None:
                from trading_helper.demo.embedded import embedded_postgres

                dsn = await stack.enter_async_context(
                    embedded_postgres(var / "pgdata", progress=lambda msg: status.update(msg))
                )
            status.update("creating or upgrading the schema")
            report = await migrate(dsn)
            status.update("connecting to Redis")
            redis, redis_label = await _open_redis(console, stack, given_redis, in_process=in_process_redis)
            token = demo_token(var, configured)  # var exists: main() made it
            # the Redis client is handed to the server as it is; REDIS_URL is only informative here
            settings = configured.model_copy(
                update={
                    "DATABASE_URL": dsn,
                    "BROKER": "sim",
                    "SIM_INSTRUMENTS": instruments,
                    "API_TOKEN": SecretStr(token),
                    "API_PORT": port,
                    "REFRESH_INTERVAL_S": 2.0,
                }
            )
            status.update(f"loading {instruments} simulated instruments")
            broker = SimBroker(settings)
            items = await broker.fetch_instruments()
            pool = await create_pool(dsn, min_size=1, max_size=2)
            try:
                async with pool.acquire() as conn:
                    await sync_instruments(conn, "sim", items)
                    mapping = await lookup_tokens(conn, "sim", [i.broker_ids["sim"] for i in items])
                    await conn.execute(sql_instruments.SUBSCRIBE, list(mapping.values()))
            finally:
                await pool.close()
        console.print(
            f"database ready ({report.flavour}, schema version {report.version}); "
            f"Redis: {redact(redis_label)}; {len(mapping)} instruments subscribed"
        )
        await _load_history(console, settings, dsn, sorted(mapping.values()))

        def ready() -> None:
            # for `trading-helper status` in this folder; a Redis URL may hold a password: not written
            write_state(
                var, url=f"http://127.0.0.1:{port}", redis=redis_label if redis_label == IN_PROCESS else "url"
            )
            stack.callback(clear_state, var)
            url = f"http://127.0.0.1:{port}/#token={token}"
            console.rule("[bold green]Trading Helper demo is running")
            console.print(f"chart page: [bold]{url}[/bold]")
            console.print(f"API token:  {token}   (API docs: http://127.0.0.1:{port}/docs)")
            kept = "" if given_dsn is not None else f"; the next start keeps the data in {var / 'pgdata'}"
            console.print(f"Ctrl-C stops everything{kept}")

        await serve(settings, host="127.0.0.1", port=port, redis=redis, on_ready=ready, sock=sock)


def main(
    port: int,
    instruments: int,
    var: Path | None = None,
    *,
    in_process_redis: bool = False,
    sock: socket.socket | None = None,
) -> None:
    """Run the demo until Ctrl-C or SIGTERM; the stop is bounded (:mod:`trading_helper.runner`).
    ``sock``: the listening socket on ``port`` when the caller bound it already."""
    console = Console()
    var = var or Path("var")
    var.mkdir(parents=True, exist_ok=True)
    runner.run(
        run_demo(
            port=port,
            instruments=instruments,
            var=var,
            console=console,
            in_process_redis=in_process_redis,
            sock=sock,
        )
    )
    console.print("demo stopped")
