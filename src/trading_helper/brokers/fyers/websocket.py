"""The Fyers live feed: one asyncio owner of the HSM data socket (protocol in ``parsing.py``).

Life of a connection: re-read the token (a morning login reaches a running feed), take the
``hsm_key`` from it, connect with no Authorization header (Fyers' gateway ignores an upgrade
that carries one), authenticate in-band, ask for full mode, resolve symbols to topics through
``/data/symbol-token``, subscribe every topic (1,500 per message), then read. Each datafeed
frame becomes one ``sink.on_ticks`` call.

Staying alive: Fyers sends no heartbeat of its own, so silence alone cannot tell a quiet market
from a dead socket. We send a WebSocket ping every third of ``STALL_TIMEOUT_S`` and count a pong
as a sign of life, plus the official client's 3-byte application ping every 10 s; a connection
with neither a frame nor a pong for ``STALL_TIMEOUT_S`` is dropped and replaced. Reconnects use
capped exponential backoff with jitter, reset after a connection that delivered data, and
resubscribe everything (the official client instead forgets its subscriptions on reconnect).
A refused token (expired ``exp``, auth status other than "K", HTTP 401/403) ends ``run`` with
a LOGIN_REQUIRED event instead of a reconnect loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from trading_helper import clock
from trading_helper.brokers.base import FeedEvent, FeedSink, FeedState, LiveFeed
from trading_helper.brokers.fyers import constants as C
from trading_helper.brokers.fyers.http import FyersHttp
from trading_helper.brokers.fyers.parsing import (
    HsmDecoder,
    ack_message,
    auth_message,
    depth_levels,
    hsm_key_from_token,
    mode_message,
    state_to_tick,
    subscribe_message,
    topic_for,
    unsubscribe_message,
)
from trading_helper.brokers.retry import backoff_delay
from trading_helper.brokers.tokens import load_token
from trading_helper.config import Settings
from trading_helper.errors import BrokerError, LoginRequired, SubscriptionLimitExceeded, UnknownInstrument
from trading_helper.models import DepthLevel, Tick

log = logging.getLogger(__name__)


class _Stalled(Exception):
    """No frame and no pong within the stall timeout."""


def _now() -> datetime:
    return clock.now()


class FyersLiveFeed(LiveFeed):
    def __init__(
        self,
        settings: Settings,
        http: FyersHttp,
        *,
        depth: bool = False,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        auth_timeout_s: float = 10.0,
    ) -> None:
        self._settings = settings
        self._http = http
        #: also subscribe the 5-level depth topic of each symbol (two topics per symbol)
        self._depth_enabled = depth
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._auth_timeout_s = auth_timeout_s
        self._stall_s = settings.STALL_TIMEOUT_S
        self._subs: dict[str, int] = {}  # Fyers symbol -> instrument id: ours to keep
        self._fytokens: dict[str, str] = {}  # Fyers symbol -> fytoken (stable for the day)
        self._topics: dict[str, str] = {}  # topic -> Fyers symbol, on the current connection
        self._depth: dict[str, tuple[tuple[DepthLevel, ...], tuple[DepthLevel, ...]]] = {}
        self._covered: frozenset[int] = frozenset()  # ids live since the last CONNECTED
        self._changed = asyncio.Event()
        self._last_activity = 0.0
        #: wall time of the last frame or pong: where coverage ends when the socket dies (a stall is
        #: noticed STALL_TIMEOUT_S later, and nothing was captured in between)
        self._alive_at = _now()
        self._session_error: BaseException | None = None
        self._got_data = False
        self.state = FeedState.STOPPED
        #: connection attempts made (diagnostics and tests)
        self.attempts = 0

    @property
    def subscriptions(self) -> Mapping[str, int]:
        return MappingProxyType(self._subs)

    def _topics_per_symbol(self) -> int:
        return 2 if self._depth_enabled else 1

    async def subscribe(self, tokens: Mapping[str, int]) -> None:
        new = [s for s in tokens if s not in self._subs]
        bad = [s for s in new if ":" not in s]
        if bad:
            raise UnknownInstrument(f"not Fyers symbols (EXCHANGE:NAME expected): {', '.join(bad[:5])}")
        total = (len(self._subs) + len(new)) * self._topics_per_symbol()
        if total > C.SYMBOL_LIMIT:
            raise SubscriptionLimitExceeded(
                f"Fyers allows at most {C.SYMBOL_LIMIT:,} topics on its data socket: {len(self._subs):,} "
                f"symbols subscribed + {len(new):,} new x {self._topics_per_symbol()} = {total:,}; "
                "unsubscribe some first"
            )
        self._subs.update(tokens)
        self._changed.set()

    async def unsubscribe(self, tokens: Iterable[str]) -> None:
        for symbol in tokens:
            self._subs.pop(symbol, None)
        self._changed.set()

    # --- the connection loop -----------------------------------------------------------------
    async def run(self, sink: FeedSink) -> None:
        attempt = 0
        try:
            while True:
                self.state = FeedState.CONNECTING
                try:
                    good, reason = await self._connect_once(sink)
                except LoginRequired as exc:
                    await self._end(sink, FeedState.LOGIN_REQUIRED, str(exc))
                    return
                await self._end(sink, FeedState.DISCONNECTED, reason)
                attempt = 0 if good else attempt + 1
                delay = backoff_delay(attempt + 1, *self._backoff)
                log.info("Fyers data socket down (%s); reconnecting in %.2fs", reason, delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            await self._end(sink, FeedState.STOPPED, "stopped")
            raise

    async def _end(self, sink: FeedSink, state: FeedState, detail: str) -> None:
        """Coverage ends: say so for the instruments that were live (all of them on a login)."""
        self.state = state
        ids = self._covered or (frozenset(self._subs.values()) if state != FeedState.DISCONNECTED else frozenset())
        self._covered = frozenset()
        if ids or state != FeedState.DISCONNECTED:
            at = self._alive_at if state == FeedState.DISCONNECTED else _now()
            await sink.on_event(FeedEvent(state, at, ids, detail))

    async def _connect_once(self, sink: FeedSink) -> tuple[bool, str]:
        """One connection, to its end: (did it deliver data, why it ended). LoginRequired escapes."""
        token = load_token(self._settings, C.BROKER_NAME)
        if not token:
            raise LoginRequired("no Fyers access token: run `trading-helper login fyers`")
        hsm_key = hsm_key_from_token(token)
        self.attempts += 1
        self._session_error = None
        self._got_data = False
        try:
            async with connect(
                self._settings.FYERS_WS_URL, open_timeout=max(self._auth_timeout_s, 1.0),
                close_timeout=1.0, ping_interval=None, compression=None, max_size=2**24,
            ) as ws:
                await self._serve(ws, hsm_key, sink)
                return self._got_data, "closed"  # not reached: _serve only ends by raising
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise LoginRequired(f"Fyers refused the data socket (HTTP {status}): log in again") from exc
            return False, f"upgrade refused: HTTP {status}"
        except _Stalled:
            return self._got_data, f"stalled: no frame or pong for {self._stall_s:g}s"
        except ConnectionClosed as exc:
            if isinstance(self._session_error, LoginRequired):
                raise self._session_error from exc
            if self._session_error is not None:
                return self._got_data, f"{type(self._session_error).__name__}: {self._session_error}"
            return self._got_data, f"connection lost ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            return False, f"cannot connect: {type(exc).__name__}"
        except BrokerError as exc:  # symbol lookups failing with 5xx/429 after retries
            if isinstance(exc, LoginRequired):
                raise
            return False, f"{type(exc).__name__}: {exc}"
        finally:
            self._topics = {}

    async def _serve(self, ws: ClientConnection, hsm_key: str, sink: FeedSink) -> None:
        """Authenticate, subscribe and read until the socket ends or stalls (always raises)."""
        decoder = HsmDecoder()
        await ws.send(auth_message(hsm_key))
        await ws.send(mode_message())
        ack_interval = await self._authenticate(ws, decoder)
        self._topics = {}
        added = await self._sync(ws, sink)
        self.state = FeedState.CONNECTED
        self._covered = frozenset(added)
        self._alive_at = _now()
        await sink.on_event(FeedEvent(FeedState.CONNECTED, self._alive_at, self._covered, "authenticated"))
        self._last_activity = time.monotonic()
        helpers = [asyncio.create_task(self._keepalive(ws)), asyncio.create_task(self._sync_loop(ws, sink))]
        frames = 0
        try:
            while True:
                remaining = self._stall_s - (time.monotonic() - self._last_activity)
                if remaining <= 0:
                    ws.transport.abort()  # a stalled peer will not answer a closing handshake
                    raise _Stalled
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
                    # lands as recv completes, and a busy socket would then never stop
                    async with asyncio.timeout(remaining):
                        frame = await ws.recv()
                except TimeoutError:
                    continue  # a pong may have arrived meanwhile: re-check the clock
                self._last_activity = time.monotonic()
                if isinstance(frame, str):
                    sink.on_reject("malformed_frame", 1)
                    continue
                message_number = await self._on_frame(frame, decoder, sink)
                if message_number is not None:
                    self._got_data, frames = True, frames + 1
                    # the auth answer asks for an acknowledgement every N datafeed frames
                    if ack_interval and frames % ack_interval == 0:
                        await ws.send(ack_message(message_number))
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _authenticate(self, ws: ClientConnection, decoder: HsmDecoder) -> int:
        async with asyncio.timeout(self._auth_timeout_s):
            while True:
                frame = await ws.recv()
                if isinstance(frame, bytes):
                    decoded = decoder.decode(frame)
                    if decoded.kind == C.REQ_AUTH:
                        if not decoded.ok:
                            raise LoginRequired("Fyers refused the access token on the data socket: log in again")
                        return decoded.ack_interval

    async def _on_frame(self, frame: bytes, decoder: HsmDecoder, sink: FeedSink) -> int | None:
        """Hand one frame's ticks to the sink; its message number when it was a datafeed frame."""
        received = self._alive_at = _now()
        decoded = decoder.decode(frame)
        for reason, count in decoded.rejects.items():
            sink.on_reject(reason, count)
        if decoded.kind != C.RESP_DATAFEED:
            if decoded.kind in (C.REQ_SUBSCRIBE, C.REQ_UNSUBSCRIBE, C.REQ_MODE) and not decoded.ok:
                log.warning("Fyers refused a request of type %d on the data socket", decoded.kind)
            return None
        ticks: list[Tick] = []
        unknown = 0
        for state in decoded.changed:
            symbol = self._topics.get(state.topic)
            instrument_id = self._subs.get(symbol) if symbol is not None else None
            if symbol is None or instrument_id is None:
                unknown += 1
                continue
            if state.kind == C.TOPIC_DEPTH:
                self._depth[symbol] = depth_levels(state)
                continue
            tick = state_to_tick(state, instrument_id, received)
            if tick is not None:
                if symbol in self._depth:
                    tick.bids, tick.asks = self._depth[symbol]
                ticks.append(tick)
        if unknown:
            sink.on_reject("unknown_instrument", unknown)
        await sink.on_ticks(ticks)
        return decoded.message_number

    # --- subscriptions -----------------------------------------------------------------------
    async def _sync(self, ws: ClientConnection, sink: FeedSink) -> set[int]:
        """Make the socket's topics match the subscriptions; returns the instrument ids added.

        Works on a copy: a subscribe() during one of the awaits sets ``_changed`` again and is
        applied by the next round."""
        self._changed.clear()
        desired = dict(self._subs)
        missing = [s for s in desired if s not in self._fytokens]
        if missing:
            valid, invalid = await self._http.symbol_tokens(missing)
            self._fytokens.update(valid)
            invalid += [s for s in missing if s not in valid and s not in invalid]
            if invalid:
                log.warning("Fyers does not know %d symbols, dropped: %s", len(invalid), ", ".join(invalid[:5]))
                sink.on_reject("unknown_instrument", len(invalid))
                for symbol in invalid:
                    self._subs.pop(symbol, None)
                    desired.pop(symbol, None)
        kinds = (C.TOPIC_SCRIP, C.TOPIC_DEPTH) if self._depth_enabled else (C.TOPIC_SCRIP,)
        wanted: dict[str, str] = {}
        for symbol in desired:
            for kind in kinds:
                topic = topic_for(symbol, self._fytokens[symbol], kind)
                if topic is not None:
                    wanted[topic] = symbol
        removed = [t for t in self._topics if t not in wanted]
        added = [t for t in wanted if t not in self._topics]
        for i in range(0, len(removed), C.SUBSCRIBE_BATCH):
            await ws.send(unsubscribe_message(removed[i:i + C.SUBSCRIBE_BATCH]))
        for i in range(0, len(added), C.SUBSCRIBE_BATCH):
            await ws.send(subscribe_message(added[i:i + C.SUBSCRIBE_BATCH]))
        before = set(self._topics.values())
        self._topics = wanted
        return {desired[s] for s in set(wanted.values()) - before}

    async def _sync_loop(self, ws: ClientConnection, sink: FeedSink) -> None:
        """Apply subscribe/unsubscribe calls made while connected, and report coverage changes."""
        try:
            while True:
                await self._changed.wait()
                live_before = self._covered
                added = await self._sync(ws, sink)
                live_now = frozenset(i for s in set(self._topics.values()) if (i := self._subs.get(s)) is not None)
                gone = live_before - live_now
                self._covered = live_now
                if added:
                    await sink.on_event(FeedEvent(FeedState.CONNECTED, _now(), frozenset(added), "subscribed"))
                if gone:
                    await sink.on_event(FeedEvent(FeedState.STOPPED, _now(), gone, "unsubscribed"))
        except ConnectionClosed:
            return
        except (BrokerError, OSError) as exc:
            self._session_error = exc  # the reader sees the socket close and reports this
            ws.transport.abort()

    async def _keepalive(self, ws: ClientConnection) -> None:
        interval = max(min(self._stall_s / 3, C.APP_PING_INTERVAL_S), 0.05)
        next_app_ping = time.monotonic() + C.APP_PING_INTERVAL_S
        try:
            while True:
                await asyncio.sleep(interval)
                pong = asyncio.ensure_future(await ws.ping())
                pong.add_done_callback(self._on_pong)
                if time.monotonic() >= next_app_ping:
                    await ws.send(C.PING_FRAME)
                    next_app_ping += C.APP_PING_INTERVAL_S
        except ConnectionClosed:
            return

    def _on_pong(self, pong: asyncio.Future[float]) -> None:
        if not pong.cancelled() and pong.exception() is None:
            self._last_activity = time.monotonic()
            self._alive_at = _now()

