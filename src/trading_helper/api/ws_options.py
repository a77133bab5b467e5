"""Live option chains to browsers: ``WS /api/ws/options?token=&underlying=&expiry=&interval_ms=``.

The server sends the chain (the document of ``GET /api/options/chain``) every ``interval_ms``
(250 to 10,000; default 2,000), computed from the latest quotes: the chain of a whole expiry moves
with every tick of any strike, so a periodic full chain is both simpler and lighter for the
browser than per-tick patches. Server -> client::

    {"type": "chain", "data": {<chain, as GET /api/options/chain>}}
    {"type": "error", "code": "...", "detail": "..."}

A bad underlying or expiry is one error message and the close (1008); a database or Redis out of
reach is an error message per interval while it lasts, and the updates resume by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import date

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from trading_helper.api import fastjson
from trading_helper.api.auth import token_matches
from trading_helper.api.ws import CLOSE_POLICY
from trading_helper.errors import TradingHelperError, ValidationError
from trading_helper.ingest.redisconn import redis_errors
from trading_helper.options.service import OptionsService
from trading_helper.redact import redact
from trading_helper.storage.db import db_errors

log = logging.getLogger(__name__)
router = APIRouter()

MIN_INTERVAL_MS, MAX_INTERVAL_MS, DEFAULT_INTERVAL_MS = 250, 10_000, 2_000


async def _push(
    ws: WebSocket, service: OptionsService, underlying: str, expiry: date | None, every_s: float
) -> None:
    while True:
        try:
            with redis_errors("option chain: Redis"), db_errors("option chain: database"):
                doc = await service.chain(underlying, expiry)
            await ws.send_text(fastjson.dumps({"type": "chain", "data": doc}).decode())
        except ValidationError as exc:
            await ws.send_text(json.dumps({"type": "error", "code": exc.code, "detail": redact(exc.message)}))
            await ws.close(code=CLOSE_POLICY, reason=exc.code)
            return
        except TradingHelperError as exc:  # out of reach for now: said, and tried again next time
            await ws.send_text(json.dumps({"type": "error", "code": exc.code, "detail": redact(exc.message)}))
        await asyncio.sleep(every_s)


async def _drain(ws: WebSocket) -> None:
    """Reads (and ignores) what the client sends, so its disconnect is noticed."""
    while True:
        await ws.receive_text()


@router.websocket("/api/ws/options")
async def chain_updates(
    websocket: WebSocket,
    token: str = "",
    underlying: str = "",
    expiry: str = "",
    interval_ms: int = DEFAULT_INTERVAL_MS,
) -> None:
    await websocket.accept()
    if not token_matches(websocket.app.state.api_token, token):
        await websocket.close(code=CLOSE_POLICY, reason="missing or wrong token: use ?token=<API_TOKEN>")
        return
    try:
        exp = date.fromisoformat(expiry) if expiry else None
    except ValueError:
        exp = None
        underlying = ""
    if not underlying.strip() or len(underlying) > 100:
        await websocket.send_text(
            json.dumps(
                {
                    "type": "error",
                    "code": "invalid",
                    "detail": "give ?underlying= and, optionally, ?expiry=YYYY-MM-DD",
                }
            )
        )
        await websocket.close(code=CLOSE_POLICY, reason="invalid")
        return
    every_s = min(MAX_INTERVAL_MS, max(MIN_INTERVAL_MS, interval_ms)) / 1000
    tasks = [
        asyncio.create_task(_push(websocket, websocket.app.state.options, underlying, exp, every_s)),
        asyncio.create_task(_drain(websocket)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception) and not isinstance(result, WebSocketDisconnect | RuntimeError):
                log.debug("option chain WebSocket ended: %r", result)
        with contextlib.suppress(Exception):
            await websocket.close()
