"""Live ticks to browsers: ``WS /api/ws/ticks?token=<API_TOKEN>``.

One Redis subscription per process (channel ``th:live``, one message per received frame) feeds
every client. Each client has a bounded queue of frames and its own sender task; a client whose
queue is full is dropped (closed with 1013 "try again later"), so one slow tab never delays the
others or the ingest path.

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

import redis.asyncio as aioredis
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from prometheus_client import Counter, Gauge

from trading_helper.api.auth import token_matches
from trading_helper.api.forming import FormingCandles, forming_json
from trading_helper.api.runtime import Runtime
from trading_helper.errors import TradingHelperError, ValidationError
from trading_helper.ingest import codec, keys
from trading_helper.ingest.redisconn import REDIS_FAILURES
from trading_helper.models import Tick
from trading_helper.redact import redact
from trading_helper.storage.db import db_errors
from trading_helper.storage.instruments import list_error, resolve_many
from trading_helper.timeframes import Timeframe

log = logging.getLogger(__name__)

WS_CLIENTS = Gauge("th_ws_clients", "WebSocket clients connected")
WS_DROPPED = Counter("th_ws_dropped_total", "WebSocket clients dropped for being too slow")
WS_BAD_FRAMES = Counter("th_ws_bad_frames_total", "Live-channel messages that could not be decoded")

#: frames a client may have waiting before it counts as too slow
QUEUE_FRAMES = 512
MAX_INSTRUMENTS_PER_CLIENT = 5000
CLOSE_TOO_SLOW = 1013  # "try again later"
CLOSE_POLICY = 1008


def tick_messages(
    forming: FormingCandles, tick: Tick, wanted: set[Timeframe]
) -> tuple[str, dict[Timeframe, str]]:
    """The ``tick`` message of ``tick`` and the ``candle`` messages of the wanted intervals it
    moves (folded into ``forming``): what the hub relays, and what a replay plays back."""
    text = json.dumps({"type": "tick", "data": codec.tick_to_json(tick)})
    if not wanted:
        return text, {}
    return text, {
        tf: json.dumps(
            {"type": "candle", "interval": tf.value, "data": forming_json(candle, tick.instrument_id)}
        )
        for tf, candle in forming.update(tick, sorted(wanted))
    }


class Client:
    __slots__ = ("dropped", "instruments", "intervals", "queue", "ws")

    def __init__(self, ws: WebSocket, queue_frames: int) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[list[str]] = asyncio.Queue(queue_frames)
        self.instruments: set[int] = set()
        self.intervals: set[Timeframe] = set()
        self.dropped = asyncio.Event()

    def offer(self, messages: list[str]) -> bool:
        try:
            self.queue.put_nowait(messages)
        except asyncio.QueueFull:
            return False
        return True

    async def pump(self) -> None:
        while True:
            for text in await self.queue.get():
                await self.ws.send_text(text)


class TickHub:
    def __init__(
        self,
        redis: aioredis.Redis | None,
        *,
        channel: str = keys.LIVE_CHANNEL,
        queue_frames: int = QUEUE_FRAMES,
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.queue_frames = queue_frames
        self.clients: set[Client] = set()
        self._watchers: dict[int, set[Client]] = {}
        self._forming = FormingCandles()
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    @property
    def client_count(self) -> int:
        return len(self.clients)

    # -- clients ------------------------------------------------------------------------------
    def add(self, ws: WebSocket) -> Client:
        client = Client(ws, self.queue_frames)
        self.clients.add(client)
        WS_CLIENTS.set(len(self.clients))
        return client

    def remove(self, client: Client) -> None:
        self.clients.discard(client)
        self.watch(client, remove=client.instruments)
        WS_CLIENTS.set(len(self.clients))

    def watch(self, client: Client, add: Sequence[int] = (), remove: Sequence[int] | set[int] = ()) -> None:
        for iid in list(remove):
            client.instruments.discard(iid)
            watchers = self._watchers.get(iid)
            if watchers is not None:
                watchers.discard(client)
                if not watchers:
                    del self._watchers[iid]
                    self._forming.forget(iid)
        for iid in add:
            client.instruments.add(iid)
            self._watchers.setdefault(iid, set()).add(client)

    def drop(self, client: Client) -> None:
        self.remove(client)
        client.dropped.set()
        WS_DROPPED.inc()
        log.info("WebSocket client dropped: its queue of %d frames was full", self.queue_frames)

    # -- fan-out ------------------------------------------------------------------------------
    def dispatch(self, payload: bytes) -> None:
        """One live-channel message (the encoded ticks of one frame): only the ticks of watched
        instruments are decoded (every replica hears the whole feed)."""
        if not self._watchers:
            return
        try:
            ticks = codec.decode_ticks_of(payload, self._watchers)
        except ValueError:
            WS_BAD_FRAMES.inc()
            return
        self.dispatch_ticks(ticks)

    def dispatch_ticks(self, ticks: Sequence[Tick]) -> None:
        """Queue each watched tick (and the candles it moves) once per watching client."""
        batches: dict[Client, list[str]] = {}
        for tick in ticks:
            watchers = self._watchers.get(tick.instrument_id)
            if not watchers:
                continue
            text, candles = tick_messages(self._forming, tick, set().union(*(c.intervals for c in watchers)))
            for client in watchers:
                batch = batches.setdefault(client, [])
                batch.append(text)
                batch.extend(candles[tf] for tf in client.intervals if tf in candles)
        for client, batch in batches.items():
            if not client.offer(batch):
                self.drop(client)

    def broadcast(self, message: dict[str, object]) -> None:
        """One message to every client (an alert as it fires: ``{"type": "alert", "data": ...}``)."""
        text = [json.dumps(message)]
        for client in list(self.clients):
            if not client.offer(text):
                self.drop(client)

    # -- the one Redis subscription -----------------------------------------------------------
    async def start(self) -> None:
        if self.redis is not None and self._task is None:
            self._task = asyncio.create_task(self._listen(self.redis), name="ws-hub")

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Bounded: a Redis read that does not act on its cancellation is left behind, logged."""
        if self._task is not None:
            self._task.cancel()
            _, pending = await asyncio.wait({self._task}, timeout=timeout_s)
            if pending:
                log.error("the live-channel listener did not stop within %.0f s: abandoned", timeout_s)
            self._task = None
        for client in list(self.clients):
            self.drop(client)

    async def _listen(self, redis: aioredis.Redis) -> None:
        delay = 0.5
        while True:
            pubsub = redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.listening.set()
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.dispatch(message["data"])
                        await asyncio.sleep(0)  # let the senders drain between frames
            except REDIS_FAILURES as exc:
                self.listening.clear()
                log.warning("live channel lost (%s); resubscribing in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception:  # never end silently: the browsers' live ticks depend on this loop
                self.listening.clear()
                log.exception("live-channel listener failed; resubscribing in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                with contextlib.suppress(*REDIS_FAILURES):
                    # redis-py leaves PubSub.aclose unannotated (a gap in its hints)
                    await pubsub.aclose()  # type: ignore[no-untyped-call]


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
