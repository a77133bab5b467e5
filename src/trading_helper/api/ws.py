"""Live ticks to browsers: ``WS /api/ws/ticks?token=<API_TOKEN>``.

The ticks come from the process's fan-out (:mod:`.hub`: one live-channel subscription while some
client watches); a subscribe is answered once they flow. A client too slow to take them is
dropped (closed with 1013 "try again later"), so one slow tab never delays the others.

Client -> server::

    {"action": "subscribe", "instruments": ["id:1", "NSE:RELIANCE", 256265], "intervals": ["1m", "5m"]}
    {"action": "unsubscribe", "instruments": ["id:2"]}

References follow the one grammar (``instruments/refs.py``): a bare number is the configured
broker's token, ``id:N`` our id. A message with a bad entry changes nothing; its error names each.

Server -> client::

    {"type": "tick", "data": {<tick, as GET /api/quotes>}}
    {"type": "candle", "interval": "1m", "data": {"instrument_id", "time", "open", "high", "low", "close",
                                                  "volume", "open_interest"}}
    {"type": "subscribed", "instruments": [<our ids>], "intervals": [...]}
    {"type": "alert", "data": {<a trigger, as GET /api/alerts/{id}/history's payload>}}   (every client)
    {"type": "error", "detail": "...", "errors": [{"instrument": "NSE:NOPE", "code": "unknown_instrument", ...}]}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from trading_helper.api.auth import token_matches
from trading_helper.api.hub import Client, TickHub
from trading_helper.api.runtime import Runtime
from trading_helper.errors import TradingHelperError, ValidationError
from trading_helper.redact import redact
from trading_helper.storage.db import db_errors
from trading_helper.storage.instruments import list_error, resolve_many
from trading_helper.timeframes import Timeframe

log = logging.getLogger(__name__)

MAX_INSTRUMENTS_PER_CLIENT = 5000
CLOSE_TOO_SLOW = 1013  # "try again later"
CLOSE_POLICY = 1008


router = APIRouter()


#: the references of a message -> (our ids, one error per bad entry); see ``resolver``
Resolve = Callable[[Sequence[int | str]], Awaitable[tuple[list[int], list[ValidationError]]]]


def resolver(runtime: Runtime) -> Resolve:
    """References in the one grammar (``instruments/refs.py``), resolved in the database."""
    broker = runtime.broker.name if runtime.broker is not None else None

    async def resolve(given: Sequence[int | str]) -> tuple[list[int], list[ValidationError]]:
        async with runtime.pool.acquire() as conn:
            found, problems = await resolve_many(conn, given, broker)
        return [i.id for i in found if i.id is not None], problems

    return resolve


def _refs(value: Any) -> list[int | str] | None:
    if not isinstance(value, list) or not value or len(value) > MAX_INSTRUMENTS_PER_CLIENT:
        return None
    if not all(isinstance(v, int | str) and not isinstance(v, bool) for v in value):
        return None
    return list(value)


def _intervals(value: Any) -> set[Timeframe] | None:
    if value is None:
        return set()
    if not isinstance(value, list) or not all(
        isinstance(v, str) and v in Timeframe._value2member_map_ for v in value
    ):
        return None
    return {Timeframe(v) for v in value}


async def handle_message(hub: TickHub, client: Client, text: str, resolve: Resolve) -> dict[str, Any]:
    """Apply one client message; the reply to send. A message with a bad reference changes nothing
    and its reply names every bad entry."""
    try:
        msg = json.loads(text)
    except ValueError:
        return {"type": "error", "detail": "messages must be JSON objects"}
    if not isinstance(msg, dict) or msg.get("action") not in ("subscribe", "unsubscribe"):
        return {"type": "error", "detail": "action must be 'subscribe' or 'unsubscribe'"}
    given = _refs(msg.get("instruments"))
    if given is None:
        return {
            "type": "error",
            "detail": f"instruments must be a list of 1 to {MAX_INSTRUMENTS_PER_CLIENT} "
            "instrument references (id:N, EXCHANGE:SYMBOL, a broker token)",
        }
    intervals = _intervals(msg.get("intervals"))
    if intervals is None:
        return {"type": "error", "detail": "intervals must be a list of 1m, 5m, 15m, 1h, 1d"}
    try:
        with db_errors("resolving instruments"):
            ids, problems = await resolve(given)
    except TradingHelperError as exc:
        log.warning("WebSocket: cannot resolve instruments: %s", exc)
        return {"type": "error", "detail": "the database cannot be reached right now; try again shortly"}
    if problems:
        return {
            "type": "error",
            "detail": redact(list_error(problems).message),
            "errors": [
                {"instrument": redact(p.reference), "code": p.code, "detail": redact(p.message)}
                for p in problems
            ],
        }
    if msg["action"] == "unsubscribe":
        hub.watch(client, remove=ids)
    else:
        if len(client.instruments | set(ids)) > MAX_INSTRUMENTS_PER_CLIENT:
            return {"type": "error", "detail": f"at most {MAX_INSTRUMENTS_PER_CLIENT} instruments per client"}
        client.intervals |= intervals
        hub.watch(client, add=ids)
        await hub.ready()
    return {
        "type": "subscribed",
        "instruments": sorted(client.instruments),
        "intervals": sorted(tf.value for tf in client.intervals),
    }


async def _read(ws: WebSocket, hub: TickHub, client: Client, resolve: Resolve) -> None:
    while True:
        text = await ws.receive_text()
        if not client.offer([json.dumps(await handle_message(hub, client, text, resolve))]):
            hub.drop(client)
            return


async def admitted(websocket: WebSocket, token: str) -> bool:
    """Accept the connection; close it (1008) unless ``token`` is the API token. Accepted first so
    the browser sees the reason (a refused handshake reads as 1006 there)."""
    await websocket.accept()
    if token_matches(websocket.app.state.api_token, token):
        return True
    await websocket.close(code=CLOSE_POLICY, reason="missing or wrong token: use ?token=<API_TOKEN>")
    return False


@router.websocket("/api/ws/ticks")
async def ticks(websocket: WebSocket, token: str = "") -> None:
    if not await admitted(websocket, token):
        return
    hub: TickHub = websocket.app.state.hub
    client = hub.add(websocket)
    resolve = resolver(websocket.app.state.runtime)
    tasks = [
        asyncio.create_task(client.pump()),
        asyncio.create_task(_read(websocket, hub, client, resolve)),
        asyncio.create_task(client.dropped.wait()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.remove(client)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, WebSocketDisconnect | RuntimeError):
                log.debug("WebSocket client ended: %r", result)
    if client.dropped.is_set():
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await websocket.close(code=CLOSE_TOO_SLOW, reason="too slow: dropped")
