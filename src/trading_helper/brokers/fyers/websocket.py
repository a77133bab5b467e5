"""The Fyers live feed: the HSM data socket (protocol in ``parsing.py``) on the one connection
lifecycle (``brokers/connection.py``).

What is Fyers' own here: the token's ``hsm_key`` claim is what the socket authenticates (an
expired token is refused before connecting); the upgrade carries no Authorization header (Fyers'
gateway ignores an upgrade that carries one); authentication is in-band, then full mode is asked
for; symbols are resolved to topics through ``/data/symbol-token`` and subscribed 1,500 per
message (the official client instead forgets its subscriptions on reconnect); each datafeed
frame becomes one ``sink.on_ticks`` call, and the auth answer may ask for an acknowledgement
every N of them.

Staying alive: Fyers sends no heartbeat of its own, so silence alone cannot tell a quiet market
from a dead socket. We send a WebSocket ping every third of ``STALL_TIMEOUT_S`` and count a pong
as a sign of life, plus the official client's 3-byte application ping every 10 s. Login,
backoff, the watchdog, resubscription and coverage events are the lifecycle's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from websockets.asyncio.client import ClientConnection

from trading_helper.brokers.connection import BrokerConnection
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
from trading_helper.brokers.managed_feed import ManagedFeed
from trading_helper.brokers.watchdog import Watchdog
from trading_helper.config import Settings
from trading_helper.errors import LoginRequired, SubscriptionLimitExceeded, UnknownInstrument
from trading_helper.models import DepthLevel, Tick

log = logging.getLogger(__name__)


class _DataSocket(BrokerConnection):
    """Fyers' one data socket."""

    label = "Fyers data socket"

    def __init__(self, feed: FyersLiveFeed, auth_timeout_s: float) -> None:
        super().__init__()
        self.feed = feed
        self._auth_timeout_s = auth_timeout_s
        self._hsm_key = ""
        self._decoder = HsmDecoder()
        self._ack_interval = 0
        self._frames = 0
        self._topics: dict[str, str] = {}  # topic -> Fyers symbol, on the current socket

    def endpoint(self, token: str) -> tuple[str, dict[str, str]]:
        self._hsm_key = hsm_key_from_token(token)  # LoginRequired for an expired token: no connect
        return self.feed.settings.FYERS_WS_URL, {}

    def connect_options(self) -> dict[str, Any]:
        return {
            "open_timeout": max(self._auth_timeout_s, 1.0),
            "ping_interval": None,
            "compression": None,
            "max_size": 2**24,
        }

    def reset(self) -> None:
        self._decoder = HsmDecoder()
        self._ack_interval = self._frames = 0
        self._topics = {}

    async def authenticate(self, ws: ClientConnection, watchdog: Watchdog) -> None:
        await ws.send(auth_message(self._hsm_key))
        await ws.send(mode_message())
        async with asyncio.timeout(self._auth_timeout_s):
            while True:
                frame = await ws.recv()
                if isinstance(frame, bytes):
                    decoded = self._decoder.decode(frame)
                    if decoded.kind == C.REQ_AUTH:
                        if not decoded.ok:
                            raise LoginRequired(
                                "Fyers refused the access token on the data socket: log in again"
                            )
                        self._ack_interval = decoded.ack_interval
                        return

    async def sync(self, ws: ClientConnection) -> None:
        """Make the socket's topics match the subscriptions. Works on a copy: a subscribe()
        during one of the awaits sets ``changed`` again and is applied by the next round."""
        feed = self.feed
        desired = dict(feed.subs)
        missing = [s for s in desired if s not in feed.fytokens]
        if missing:
            valid, invalid = await feed.http.symbol_tokens(missing)
            feed.fytokens.update(valid)
            invalid += [s for s in missing if s not in valid and s not in invalid]
            if invalid:
                log.warning(
                    "Fyers does not know %d symbols, dropped: %s", len(invalid), ", ".join(invalid[:5])
                )
                if feed.sink is not None:
                    feed.sink.on_reject("unknown_instrument", len(invalid))
                for symbol in invalid:
                    feed.subs.pop(symbol, None)
                    desired.pop(symbol, None)
        kinds = (C.TOPIC_SCRIP, C.TOPIC_DEPTH) if feed.depth_enabled else (C.TOPIC_SCRIP,)
        wanted: dict[str, str] = {}
        for symbol in desired:
            for kind in kinds:
                topic = topic_for(symbol, feed.fytokens[symbol], kind)
                if topic is not None:
                    wanted[topic] = symbol
        removed = [t for t in self._topics if t not in wanted]
        added = [t for t in wanted if t not in self._topics]
        for i in range(0, len(removed), C.SUBSCRIBE_BATCH):
            await ws.send(unsubscribe_message(removed[i : i + C.SUBSCRIBE_BATCH]))
        for i in range(0, len(added), C.SUBSCRIBE_BATCH):
            await ws.send(subscribe_message(added[i : i + C.SUBSCRIBE_BATCH]))
        self._topics = wanted

    def live_ids(self) -> frozenset[int]:
        subs = self.feed.subs
        return frozenset(subs[s] for s in set(self._topics.values()) if s in subs)

    async def keepalive(self, ws: ClientConnection, watchdog: Watchdog) -> None:
        interval = max(min(watchdog.stall_s / 3, C.APP_PING_INTERVAL_S), 0.05)
        next_app_ping = time.monotonic() + C.APP_PING_INTERVAL_S

        def on_pong(pong: asyncio.Future[float]) -> None:
            if not pong.cancelled() and pong.exception() is None:
                watchdog.touch()

        while True:
            await asyncio.sleep(interval)
            pong = asyncio.ensure_future(await ws.ping())
            pong.add_done_callback(on_pong)
            if time.monotonic() >= next_app_ping:
                await ws.send(C.PING_FRAME)
                next_app_ping += C.APP_PING_INTERVAL_S

    async def on_frame(self, ws: ClientConnection, frame: str | bytes, received: datetime) -> bool:
        sink = self.feed.sink
        if sink is None:
            return False
        if isinstance(frame, str):
            sink.on_reject("malformed_frame", 1)
            return False
        decoded = self._decoder.decode(frame)
        for reason, count in decoded.rejects.items():
            sink.on_reject(reason, count)
        if decoded.kind != C.RESP_DATAFEED:
            if decoded.kind in (C.REQ_SUBSCRIBE, C.REQ_UNSUBSCRIBE, C.REQ_MODE) and not decoded.ok:
                log.warning("Fyers refused a request of type %d on the data socket", decoded.kind)
            return False
        ticks: list[Tick] = []
        unknown = 0
        depth = self.feed.depth
        for state in decoded.changed:
            symbol = self._topics.get(state.topic)
            instrument_id = self.feed.subs.get(symbol) if symbol is not None else None
            if symbol is None or instrument_id is None:
                unknown += 1
                continue
            if state.kind == C.TOPIC_DEPTH:
                depth[symbol] = depth_levels(state)
                continue
            tick = state_to_tick(state, instrument_id, received)
            if tick is not None:
                if symbol in depth:
                    tick.bids, tick.asks = depth[symbol]
                ticks.append(tick)
        if unknown:
            sink.on_reject("unknown_instrument", unknown)
        await sink.on_ticks(ticks)
        if decoded.message_number is None:
            return False
        self._frames += 1
        # the auth answer asks for an acknowledgement every N datafeed frames
        if self._ack_interval and self._frames % self._ack_interval == 0:
            await ws.send(ack_message(decoded.message_number))
        return True


class FyersLiveFeed(ManagedFeed):
    broker_name = C.BROKER_NAME

    def __init__(
        self,
        settings: Settings,
        http: FyersHttp,
        *,
        depth: bool = False,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        auth_timeout_s: float = 10.0,
        token_poll_s: float = 1.0,
    ) -> None:
        super().__init__(
            settings,
            backoff_base_s=backoff_base_s,
            backoff_cap_s=backoff_cap_s,
            open_timeout_s=max(auth_timeout_s, 1.0),
            token_poll_s=token_poll_s,
        )
        self.http = http
        #: also subscribe the 5-level depth topic of each symbol (two topics per symbol)
        self.depth_enabled = depth
        self.subs: dict[str, int] = {}  # Fyers symbol -> instrument id: ours to keep
        self.fytokens: dict[str, str] = {}  # Fyers symbol -> fytoken (stable for the day)
        self.depth: dict[str, tuple[tuple[DepthLevel, ...], tuple[DepthLevel, ...]]] = {}
        self._socket = _DataSocket(self, auth_timeout_s)
        self._add_connection(self._socket)

    @property
    def subscriptions(self) -> Mapping[str, int]:
        return MappingProxyType(self.subs)

    def _topics_per_symbol(self) -> int:
        return 2 if self.depth_enabled else 1

    async def subscribe(self, tokens: Mapping[str, int]) -> None:
        new = [s for s in tokens if s not in self.subs]
        bad = [s for s in new if ":" not in s]
        if bad:
            raise UnknownInstrument(f"not Fyers symbols (EXCHANGE:NAME expected): {', '.join(bad[:5])}")
        total = (len(self.subs) + len(new)) * self._topics_per_symbol()
        if total > C.SYMBOL_LIMIT:
            raise SubscriptionLimitExceeded(
                f"Fyers allows at most {C.SYMBOL_LIMIT:,} topics on its data socket: {len(self.subs):,} "
                f"symbols subscribed + {len(new):,} new x {self._topics_per_symbol()} = {total:,}; "
                "unsubscribe some first"
            )
        self.subs.update(tokens)
        self._changed(self._socket)

    async def unsubscribe(self, tokens: Iterable[str]) -> None:
        for symbol in tokens:
            self.subs.pop(symbol, None)
        self._changed(self._socket)
