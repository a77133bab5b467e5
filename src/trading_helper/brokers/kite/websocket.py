"""Kite ticker: an asyncio WebSocket client behind :class:`~trading_helper.brokers.base.LiveFeed`.

Why not the official ``KiteTicker``: it runs on Twisted in a thread, its ping watchdog stopped
working in 5.0.1 (pykiteconnect #229/#230, silent stalls), and a stopped reactor cannot reconnect.

Each connection owns its life: read the token from the token store (so a morning login reaches a
running service), connect to ``{KITE_WS_URL}?api_key=..&access_token=..``, subscribe every token of
its shard and set each token's mode, then read. No frame at all (Kite sends a 1-byte heartbeat
about once a second) for ``Settings.STALL_TIMEOUT_S`` means the socket is dead: it is closed and
reopened with capped exponential backoff and jitter (reset once a connection delivered a frame).
A 403 on the upgrade means the token expired: the feed reports LOGIN_REQUIRED and stops instead
of retrying. Kite allows 3000 tokens per connection and 3 connections per API key, so tokens are
sharded over up to 3 connections.

Coverage events: CONNECTED at the time a connection (re)subscribed, DISCONNECTED at the time of
the last frame received before it died, each with that connection's instrument ids, so the gap in
between is known as not captured and can be backfilled from history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from trading_helper import clock
from trading_helper.brokers.base import FeedEvent, FeedSink, FeedState, LiveFeed
from trading_helper.brokers.kite import constants as c
from trading_helper.brokers.kite.parsing import (
    kite_frame_to_packets,
    kite_packet_to_tick,
    kite_text_to_message,
)
from trading_helper.brokers.kite.retry import backoff_delay
from trading_helper.brokers.tokens import load_token
from trading_helper.config import Settings
from trading_helper.errors import ConfigError, SubscriptionLimitExceeded, UnknownInstrument, ValidationError
from trading_helper.models import Tick

log = logging.getLogger(__name__)
# websockets logs the request line, access token included, at DEBUG: its own logger, kept at
# INFO, keeps the token out of the logs whatever the root level is.
_protocol_log = logging.getLogger(f"{__name__}.protocol")
_protocol_log.setLevel(logging.INFO)


def _now() -> datetime:
    return clock.now()


@dataclass(eq=False)
class _Shard:
    """One of the (up to 3) connections and the tokens it carries."""

    index: int
    tokens: set[int] = field(default_factory=set)
    ws: ClientConnection | None = None
    task: asyncio.Task[None] | None = None
    connected: bool = False


class KiteTicker(LiveFeed):
    def __init__(
        self,
        settings: Settings,
        *,
        mode: str = c.MODE_FULL,
        max_tokens_per_connection: int = c.MAX_TOKENS_PER_CONNECTION,
        max_connections: int = c.MAX_CONNECTIONS,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        open_timeout_s: float = 10.0,
    ) -> None:
        if mode not in c.MODES:
            raise ValidationError(f"Kite mode {mode!r} is not one of {sorted(c.MODES)}")
        self._settings = settings
        self._default_mode = mode
        self._per_connection = max_tokens_per_connection
        self._shards = [_Shard(i) for i in range(max_connections)]
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._open_timeout_s = open_timeout_s
        self._ids: dict[int, int] = {}  # Kite token -> our instrument id
        self._modes: dict[int, str] = {}
        self._shard_of: dict[int, _Shard] = {}
        self._sink: FeedSink | None = None
        self._wake: asyncio.Event | None = None
        self._login_detail: str | None = None
        self._ever_connected = False
        self.state = FeedState.STOPPED

    @property
    def subscriptions(self) -> Mapping[str, int]:
        return {str(t): i for t, i in self._ids.items()}

    @property
    def connections(self) -> int:
        """How many connections are open now."""
        return sum(1 for s in self._shards if s.connected)

    # --- subscriptions -------------------------------------------------------------------------
    async def subscribe(self, tokens: Mapping[str, int], mode: str | None = None) -> None:
        """Add (or re-mode) instruments; kept across reconnects. ``mode``: ltp, quote or full."""
        mode = mode or self._default_mode
        if mode not in c.MODES:
            raise ValidationError(f"Kite mode {mode!r} is not one of {sorted(c.MODES)}")
        wanted = {_token(t): iid for t, iid in tokens.items()}
        fresh = [t for t in wanted if t not in self._ids]
        capacity = self._per_connection * len(self._shards)
        if len(self._ids) + len(fresh) > capacity:
            raise SubscriptionLimitExceeded(
                f"Kite allows {self._per_connection} instruments per connection and {len(self._shards)} "
                f"connections per API key ({capacity} in all): {len(self._ids)} subscribed + {len(fresh)} new "
                f"= {len(self._ids) + len(fresh)}. Unsubscribe some, or use another API key."
            )
        for t in fresh:
            shard = next(s for s in self._shards if len(s.tokens) < self._per_connection)
            shard.tokens.add(t)
            self._shard_of[t] = shard
        self._ids.update(wanted)
        for t in wanted:
            self._modes[t] = mode
        # a shard that just got its first tokens has no connection yet: the feed is not fully
        # connected until it has (callers read CONNECTED as "every subscribed token is captured")
        self._update_state()
        # plan every message before the first await: the maps may change while we send
        at = _now()
        plan = []
        for shard in self._shards:
            mine = [t for t in wanted if self._shard_of[t] is shard]
            if mine and shard.connected and shard.ws is not None:  # otherwise sent on (re)connect
                new = [t for t in fresh if self._shard_of[t] is shard]
                plan.append((shard, shard.ws, mine, new, frozenset(self._ids[t] for t in new)))
        self._poke()
        for shard, ws, mine, new, new_ids in plan:
            with contextlib.suppress(ConnectionClosed):  # the read loop reconnects and resubscribes
                if new:
                    await ws.send(json.dumps({"a": "subscribe", "v": new}))
                await ws.send(json.dumps({"a": "mode", "v": [mode, mine]}))
            if new_ids:
                await self._emit(FeedEvent(FeedState.CONNECTED, at, new_ids,
                                           detail=f"subscribed on connection {shard.index}"))

    async def unsubscribe(self, tokens: Iterable[str]) -> None:
        at = _now()
        groups: dict[int, list[int]] = {}
        ids: dict[int, set[int]] = {}
        for t in {_token(t) for t in tokens}:
            if t in self._ids:
                shard = self._shard_of.pop(t)
                shard.tokens.discard(t)
                groups.setdefault(shard.index, []).append(t)
                ids.setdefault(shard.index, set()).add(self._ids.pop(t))
                del self._modes[t]
        plan = [(self._shards[i], self._shards[i].ws, mine) for i, mine in groups.items()
                if self._shards[i].connected and self._shards[i].ws is not None]
        self._poke()
        for shard, ws, mine in plan:
            assert ws is not None
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"a": "unsubscribe", "v": mine}))
            await self._emit(FeedEvent(FeedState.STOPPED, at, frozenset(ids[shard.index]), detail="unsubscribed"))

    # --- running -------------------------------------------------------------------------------
    async def run(self, sink: FeedSink) -> None:
        if self._wake is not None:
            raise RuntimeError("this Kite feed is already running")
        self._sink, self._wake, self._login_detail = sink, asyncio.Event(), None
        self.state = FeedState.CONNECTING
        try:
            while self._login_detail is None:
                self._wake.clear()
                self._reconcile()
                await self._wake.wait()
        finally:
            live = frozenset(self._ids[t] for s in self._shards if s.connected for t in s.tokens)
            tasks = [s.task for s in self._shards if s.task is not None]
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for s in self._shards:
                s.task, s.connected, s.ws = None, False, None
            self._wake = None
            if self._login_detail is not None:
                self.state = FeedState.LOGIN_REQUIRED
            else:
                self.state = FeedState.STOPPED
                if live:
                    await self._emit(FeedEvent(FeedState.STOPPED, _now(), live, detail="feed stopped"))
            self._sink = None
            for result in results:  # a crashed connection task is a bug: surface it
                if isinstance(result, Exception):
                    raise result

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _reconcile(self) -> None:
        """Start a task for every shard with tokens, stop the tasks of empty shards."""
        for shard in self._shards:
            task = shard.task
            if task is not None and task.done():
                shard.task = None
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
            if shard.tokens and shard.task is None:
                shard.task = asyncio.create_task(self._connection_loop(shard), name=f"kite-ticker-{shard.index}")
                shard.task.add_done_callback(lambda _t: self._poke())
            elif not shard.tokens and shard.task is not None:
                shard.task.cancel()

    async def _connection_loop(self, shard: _Shard) -> None:
        attempt = 0
        while shard.tokens:
            token = load_token(self._settings, c.BROKER_NAME)
            if not token:
                await self._login_required("no Kite access token stored")
                return
            query = urlencode({"api_key": self._settings.KITE_API_KEY, "access_token": token})
            try:
                ws = await connect(
                    f"{self._settings.KITE_WS_URL}?{query}",
                    additional_headers={"X-Kite-Version": c.KITE_VERSION},
                    open_timeout=self._open_timeout_s, close_timeout=1.0, max_size=2**23,
                    logger=_protocol_log,
                )
            except InvalidURI:
                raise ConfigError("KITE_WS_URL is not a valid WebSocket URL") from None  # the URI holds the token
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    await self._login_required(f"the ticker refused the access token (HTTP {status})")
                    return
                reason, delivered = f"upgrade refused: HTTP {status}", False
            except (OSError, TimeoutError, WebSocketException) as exc:
                reason, delivered = f"connect failed: {type(exc).__name__}", False
            else:
                reason, delivered = await self._serve(shard, ws)
            attempt = 1 if delivered else attempt + 1
            delay = backoff_delay(attempt, self._backoff_base_s, self._backoff_cap_s)
            log.warning("Kite ticker connection %d: %s; reconnecting in %.2fs", shard.index, reason, delay)
            self._update_state()
            await asyncio.sleep(delay)

    async def _serve(self, shard: _Shard, ws: ClientConnection) -> tuple[str, bool]:
        """Subscribe and read until the connection dies; returns (why, whether any frame came)."""
        stall_s = self._settings.STALL_TIMEOUT_S
        last_frame_at = _now()
        frames = 0
        try:
            shard.ws = ws
            await self._resubscribe(ws, shard)
            # no await between the last check in _resubscribe and this: subscribe() calls from
            # now on send to the socket themselves
            shard.connected = self._ever_connected = True
            ids = frozenset(self._ids[t] for t in shard.tokens)
            await self._emit(FeedEvent(FeedState.CONNECTED, last_frame_at, ids, detail=f"connection {shard.index}"))
            self._update_state()
            while True:
                try:
                    async with asyncio.timeout(stall_s):
                        message = await ws.recv()
                except TimeoutError:
                    reason = f"stalled: no frame for {stall_s:g}s"
                    break
                last_frame_at = _now()
                frames += 1
                await self._on_message(message, last_frame_at)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else "none"
            reason = f"connection closed (close code {code})"
        finally:
            was_connected, shard.connected, shard.ws = shard.connected, False, None
            await ws.close()
        if was_connected:
            ids = frozenset(self._ids[t] for t in shard.tokens)  # unsubscribed ones had their STOPPED
            await self._emit(FeedEvent(FeedState.DISCONNECTED, last_frame_at, ids, detail=reason))
        return reason, frames > 0

    async def _resubscribe(self, ws: ClientConnection, shard: _Shard) -> None:
        """Subscribe the shard's tokens and set each one's mode, until nothing changed meanwhile.

        subscribe()/unsubscribe() calls landing while these messages are sent only update our
        maps (the connection is not marked connected yet), so loop until the server has it all.
        """
        sent: dict[int, str] = {}
        while True:
            want = {t: self._modes[t] for t in shard.tokens}  # a snapshot: the sends below yield
            pending = sorted(t for t, mode in want.items() if sent.get(t) != mode)
            stale = [t for t in sent if t not in want]
            if not pending and not stale:
                return
            if stale:
                await ws.send(json.dumps({"a": "unsubscribe", "v": stale}))
            new = [t for t in pending if t not in sent]
            if new:
                await ws.send(json.dumps({"a": "subscribe", "v": new}))
            by_mode: dict[str, list[int]] = {}
            for t in pending:
                by_mode.setdefault(want[t], []).append(t)
            for mode, group in by_mode.items():
                await ws.send(json.dumps({"a": "mode", "v": [mode, group]}))
            sent = {t: want[t] for t in want}

    async def _on_message(self, message: str | bytes, received: datetime) -> None:
        sink = self._sink
        if sink is None:
            return
        if isinstance(message, str):
            text = kite_text_to_message(message)
            if text is None:
                sink.on_reject(c.REJECT_MALFORMED_FRAME, 1)
            elif text.type == "error":
                log.warning("Kite ticker error message: %.200s", text.data)
            else:
                log.debug("Kite ticker %s message ignored", text.type)
            return
        result = kite_frame_to_packets(message)
        for reason, count in result.rejects.items():
            sink.on_reject(reason, count)
        ticks: list[Tick] = []
        unknown = 0
        for packet in result.packets:
            instrument_id = self._ids.get(packet.instrument_token)
            if instrument_id is None:  # e.g. a packet already in flight when we unsubscribed
                unknown += 1
            else:
                ticks.append(kite_packet_to_tick(packet, instrument_id, received))
        if unknown:
            sink.on_reject(c.REJECT_UNKNOWN_INSTRUMENT, unknown)
        await sink.on_ticks(ticks)  # one call per binary frame, empty for heartbeats

    async def _login_required(self, detail: str) -> None:
        if self._login_detail is not None:
            return  # another connection already reported it
        self._login_detail = detail
        self.state = FeedState.LOGIN_REQUIRED
        log.error("Kite login needed: %s; the live feed stops until `trading-helper login kite`", detail)
        await self._emit(FeedEvent(FeedState.LOGIN_REQUIRED, _now(), frozenset(self._ids.values()),
                                   detail=f"{detail}: run `trading-helper login kite`"))
        self._poke()

    async def _emit(self, event: FeedEvent) -> None:
        if self._sink is not None:
            await self._sink.on_event(event)

    def _update_state(self) -> None:
        if self._login_detail is not None or self._wake is None:
            return
        active = [s for s in self._shards if s.tokens]
        if active and all(s.connected for s in active):
            self.state = FeedState.CONNECTED
        else:
            self.state = FeedState.DISCONNECTED if self._ever_connected else FeedState.CONNECTING


def _token(value: str | int) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) >= 2**32:
        raise UnknownInstrument(f"not a Kite instrument token: {value!r}")
    return int(text)
