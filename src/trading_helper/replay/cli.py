"""``trading-helper replay``: stored ticks to stdout as JSON lines (the live WebSocket's messages,
one a line), or a WebSocket server of replays (``--serve``) speaking ``/api/ws/replay``."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import Annotated

import typer

from trading_helper.errors import TradingHelperError, ValidationError


async def _print_replay(
    refs: list[str], intervals: list[str], start: datetime, end: datetime, speed: float | None
) -> None:
    from rich.console import Console
    from rich.progress import Progress

    from trading_helper.config import get_settings
    from trading_helper.replay.session import replay_messages
    from trading_helper.storage.db import create_pool, db_errors
    from trading_helper.storage.instruments import list_error, resolve_many
    from trading_helper.timeframes import parse_timeframe

    settings = get_settings()
    wanted = {parse_timeframe(i) for i in intervals}
    pool = await create_pool(settings.DATABASE_URL, min_size=1, max_size=2)
    try:
        with db_errors("resolving instruments"):
            async with pool.acquire() as conn:
                found, problems = await resolve_many(conn, refs, settings.BROKER)
        if problems:
            raise list_error(problems)
        ids = [i.id for i in found if i.id is not None]
        span = (end - start).total_seconds()
        out = sys.stdout
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("replaying", total=span)
            async for at, messages in replay_messages(pool, ids, wanted, start, end, speed):
                out.write("\n".join(messages) + "\n")
                if at is not None:
                    bar.update(task, completed=min(span, (at - start).total_seconds()))
            out.flush()
    finally:
        await pool.close()


async def _serve_replays(host: str, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    from trading_helper import redact
    from trading_helper.api.auth import api_token
    from trading_helper.api.runtime import Runtime
    from trading_helper.api.ws_replay import router
    from trading_helper.config import get_settings
    from trading_helper.storage.db import create_pool

    settings = get_settings()
    token, generated = api_token(settings)
    if generated:
        print(f"API_TOKEN is not set: generated one for this process: {token}", file=sys.stderr)
    redact.register(token)
    pool = await create_pool(settings.DATABASE_URL, min_size=1, max_size=4)
    try:
        app = FastAPI()
        app.include_router(router)
        app.state.api_token = token
        app.state.runtime = Runtime(settings=settings, pool=pool)
        print(
            f"replays on ws://{host}:{port}/api/ws/replay?token=...&from=...&to=...&speed=...",
            file=sys.stderr,
        )
        await uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).serve()
    finally:
        await pool.close()


def replay(
    instruments: Annotated[
        list[str] | None, typer.Argument(help="Instrument references (id:N, EXCHANGE:SYMBOL, a token).")
    ] = None,
    start: str = typer.Option("", "--from", help="ISO 8601 (naive = IST): the first update's time."),
    end: str = typer.Option("", "--to", help="ISO 8601 (naive = IST): replay updates before this time."),
    speed: str = typer.Option("max", help="Times real time, 1 to 10000, or max (as fast as stdout takes)."),
    interval: Annotated[
        list[str] | None, typer.Option("--interval", help="Candle messages of these intervals (default 1m).")
    ] = None,
    serve: str = typer.Option(
        "", help="HOST:PORT: serve /api/ws/replay there instead (clients choose instruments and range)."
    ),
) -> None:
    """Play stored ticks back in exchange-time order, as the live WebSocket's messages (tick,
    candle, hole where capture was down, replay_end), one JSON message a line on stdout."""
    from trading_helper.api.ws_replay import parse_time
    from trading_helper.cli_common import _fail
    from trading_helper.replay.pace import parse_speed

    try:
        if serve:
            host, _, port = serve.rpartition(":")
            if not host or not port.isdigit():
                raise ValidationError(f"--serve must be HOST:PORT; got {serve!r}")
            asyncio.run(_serve_replays(host, int(port)))
            return
        if not instruments:
            raise ValidationError("name at least one instrument to replay")
        t0, t1 = parse_time("--from", start), parse_time("--to", end)
        if t0 >= t1:
            raise ValidationError("--from must be before --to")
        asyncio.run(_print_replay(instruments, interval or ["1m"], t0, t1, parse_speed(speed)))
    except BrokenPipeError:  # the reader stopped (``| head``): not an error of ours
        sys.stderr.close()
    except TradingHelperError as exc:
        _fail(exc)
