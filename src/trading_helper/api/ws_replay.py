"""Replay of stored ticks over the live protocol: ``WS /api/ws/replay?token=&from=&to=&speed=``.

The client speaks as to ``/api/ws/ticks`` (``api/ws.py``): its first ``subscribe`` message (the
same instruments and intervals, the same reply) starts the replay of those instruments' stored
updates whose time lies in [from, to) (ISO 8601, naive = IST), at ``speed`` times real time (1 to
10000, or ``max``: as fast as the client reads). The server then sends the live ``tick`` and
``candle`` messages in exchange-time order, a ``hole`` message where capture was down, and
``replay_end``, and closes (1000). A bad parameter closes with 1008 and the reason.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from trading_helper.api.hub import Client, TickHub
from trading_helper.api.ws import CLOSE_POLICY, admitted, handle_message, resolver
from trading_helper.candles.service import as_ist
from trading_helper.errors import TradingHelperError, ValidationError
from trading_helper.redact import redact
from trading_helper.replay.pace import parse_speed
from trading_helper.replay.session import replay_messages

log = logging.getLogger(__name__)

router = APIRouter()


def parse_time(name: str, value: str) -> datetime:
    try:
        return as_ist(datetime.fromisoformat(value))
    except ValueError:
        raise ValidationError(f"{name} must be an ISO 8601 time (naive = IST); got {value!r}") from None


@router.websocket("/api/ws/replay")
async def replay(websocket: WebSocket, token: str = "") -> None:
    if not await admitted(websocket, token):
        return
    params = websocket.query_params
    try:
        start = parse_time("from", params.get("from", ""))
        end = parse_time("to", params.get("to", ""))
        speed = parse_speed(params.get("speed", "1"))
        if start >= end:
            raise ValidationError("from must be before to")
    except ValidationError as exc:
        await websocket.close(code=CLOSE_POLICY, reason=redact(exc.message)[:120])
        return
    runtime = websocket.app.state.runtime
    hub = TickHub(None)  # this connection's own: it only records what the client subscribed
    client = Client(websocket, 1)
    resolve = resolver(runtime)
    try:
        while not client.instruments:
            reply = await handle_message(hub, client, await websocket.receive_text(), resolve)
            await websocket.send_text(json.dumps(reply))
        async for _, messages in replay_messages(
            runtime.pool, sorted(client.instruments), set(client.intervals), start, end, speed
        ):
            for text in messages:
                await websocket.send_text(text)
    except WebSocketDisconnect:
        return
    except TradingHelperError as exc:
        log.warning("replay failed: %s", redact(exc.message))
        await websocket.close(code=1011, reason=redact(exc.message)[:120])
        return
    await websocket.close(code=1000, reason="replay complete")
