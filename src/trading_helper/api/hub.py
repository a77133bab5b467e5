"""The live fan-out of one process: the live channel's ticks to the WebSocket clients watching them.

One Redis subscription per process (channel ``th:live``, one message per received frame) feeds
every client; it is held only while some client watches an instrument (and :data:`LINGER_S`
after the last stops), so a replica nobody watches through does not read the whole feed (at
12,000 instruments that cost each idle replica about 3 µs of CPU per tick, and Redis the copy).
A subscribe is answered once the subscription is in place (:meth:`TickHub.ready`): ticks
published after the answer reach the client. Each client has a bounded queue of frames, drained
by its own sender task; a client whose queue is full is dropped, so one slow tab never delays the
others or the ingest path. The protocol itself is :mod:`.ws`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence

import redis.asyncio as aioredis
from fastapi import WebSocket
from prometheus_client import Counter, Gauge
from redis.asyncio.client import PubSub

from trading_helper.api.forming import FormingCandles, forming_json
from trading_helper.ingest import codec, keys
from trading_helper.ingest.redisconn import REDIS_FAILURES
from trading_helper.models import Tick
from trading_helper.timeframes import Timeframe

log = logging.getLogger(__name__)

WS_CLIENTS = Gauge("th_ws_clients", "WebSocket clients connected")
WS_DROPPED = Counter("th_ws_dropped_total", "WebSocket clients dropped for being too slow")
WS_BAD_FRAMES = Counter("th_ws_bad_frames_total", "Live-channel messages that could not be decoded")

#: frames a client may have waiting before it counts as too slow
QUEUE_FRAMES = 512
#: the live channel is left this long after the last watcher is gone (a page reload keeps it)
LINGER_S = 10.0
#: a subscribe waits at most this long for the live channel to be in place before it is answered
LISTEN_WAIT_S = 2.0


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
        linger_s: float = LINGER_S,
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.queue_frames = queue_frames
        self.clients: set[Client] = set()
        self._watchers: dict[int, set[Client]] = {}
        self._forming = FormingCandles()
        self._task: asyncio.Task[None] | None = None
        #: the listener reads the channel (a client watching is answered once it is set)
        self.listening = asyncio.Event()
        #: Redis has the listener's subscription (False only once it is surely gone)
        self.subscribed = False
        self.linger_s = linger_s
        #: set while some client watches an instrument: the listener subscribes
        self._wanted = asyncio.Event()

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
        if self._watchers:
            self._wanted.set()
        else:
            self._wanted.clear()

    async def ready(self, timeout_s: float = LISTEN_WAIT_S) -> bool:
        """True once the live channel is subscribed (waits for it after a first watcher); False
        when Redis does not answer within ``timeout_s`` (the client is answered anyway, and gets
        ticks once the listener is back)."""
        if self.redis is None:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.listening.wait()
        return self.listening.is_set()

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
            await self._wanted.wait()
            pubsub = redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.listening.set()
                delay = 0.5
                self.subscribed = True
                await self._relay(pubsub)
                self.listening.clear()  # a client watching from now on waits for the next subscribe
                await self._leave(pubsub)
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
                self.listening.clear()
                with contextlib.suppress(*REDIS_FAILURES):
                    # redis-py before 8.2 leaves PubSub.aclose unannotated (a gap in its hints)
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
                self.subscribed = False

    @staticmethod
    async def _leave(pubsub: PubSub) -> None:
        """Unsubscribe and read until Redis confirms it (ticks meanwhile are nobody's): once
        :attr:`subscribed` is False, Redis counts this reader no more (``listening`` is cleared
        before the connection closes: a test that waited for it saw the subscription still
        counted, once in a fault-set run)."""
        await pubsub.unsubscribe()
        deadline = asyncio.get_running_loop().time() + 2.0
        while pubsub.subscribed and asyncio.get_running_loop().time() < deadline:
            await pubsub.get_message(timeout=0.1)

    async def _relay(self, pubsub: PubSub) -> None:
        """Messages to the clients until nobody has watched anything for ``linger_s``."""
        idle_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            message = await pubsub.get_message(timeout=min(1.0, self.linger_s))
            if message is not None and message.get("type") == "message":
                self.dispatch(message["data"])
                await asyncio.sleep(0)  # let the senders drain between frames
            if self._watchers:
                idle_since = None
            elif idle_since is None:
                idle_since = loop.time()
            elif loop.time() - idle_since >= self.linger_s:
                log.debug("live channel left: no client watches an instrument")
                return
