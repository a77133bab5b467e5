"""Kite ticker: an asyncio WebSocket client on the one connection lifecycle (``brokers/connection.py``).

Why not the official ``kiteconnect.KiteTicker``: it runs on Twisted in a thread, its ping watchdog stopped
working in 5.0.1 (pykiteconnect #229/#230, silent stalls), and a stopped reactor cannot reconnect.

What is Kite's own here: the upgrade URL carries the token (``{KITE_WS_URL}?api_key=..&access_token=..``,
no in-band login); subscriptions are ``{"a": "subscribe", "v": [tokens]}`` then one
``{"a": "mode", "v": [mode, [tokens]]}`` per mode; Kite sends a 1-byte heartbeat about once a
second, so any frame is a sign of life and no ping is needed. Kite allows 3000 tokens per
connection and 3 connections per API key, so tokens are sharded over up to 3 connections, each
with its own lifecycle (a shard without tokens closes its connection). Login, backoff, the silence
watchdog (``Settings.STALL_TIMEOUT_S``), resubscription and coverage events are the lifecycle's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection

from trading_helper.brokers.connection import BrokerConnection
from trading_helper.brokers.kite import constants as c
from trading_helper.brokers.kite.frames import parse_frame
from trading_helper.brokers.kite.parsing import kite_text_to_message
from trading_helper.brokers.managed_feed import ManagedFeed
from trading_helper.config import Settings
from trading_helper.errors import SubscriptionLimitExceeded, UnknownInstrument, ValidationError

log = logging.getLogger(__name__)


class _Shard(BrokerConnection):
    """One of the (up to 3) connections and the tokens it carries."""

    def __init__(self, feed: KiteLiveFeed, index: int) -> None:
        super().__init__()
        self.feed = feed
        self.index = index
        self.label = f"Kite ticker connection {index}"
        self.tokens: set[int] = set()
        #: what the current socket was sent: token -> (mode, instrument id)
        self._sent: dict[int, tuple[str, int]] = {}

    def wanted(self) -> bool:
        return bool(self.tokens)

    def endpoint(self, token: str) -> tuple[str, dict[str, str]]:
        query = urlencode({"api_key": self.feed.settings.KITE_API_KEY, "access_token": token})
        return f"{self.feed.settings.KITE_WS_URL}?{query}", {"X-Kite-Version": c.KITE_VERSION}

    def connect_options(self) -> dict[str, object]:
        return {"max_size": 2**23}

    def reset(self) -> None:
        self._sent = {}

    async def sync(self, ws: ClientConnection) -> None:
        """Unsubscribe what went, subscribe what is new, set each changed token's mode."""
        ids, modes = self.feed.ids, self.feed.modes
        want = {t: (modes[t], ids[t]) for t in self.tokens}  # a snapshot: the sends below yield
        stale = [t for t in self._sent if t not in want]
        pending = sorted(t for t, (mode, _) in want.items() if self._sent.get(t, ("",))[0] != mode)
        new = [t for t in pending if t not in self._sent]
        if stale:
            await ws.send(json.dumps({"a": "unsubscribe", "v": stale}))
        if new:
            await ws.send(json.dumps({"a": "subscribe", "v": new}))
        by_mode: dict[str, list[int]] = {}
        for t in pending:
            by_mode.setdefault(want[t][0], []).append(t)
        for mode, group in by_mode.items():
            await ws.send(json.dumps({"a": "mode", "v": [mode, group]}))
        self._sent = want

    def live_ids(self) -> frozenset[int]:
        return frozenset(iid for _, iid in self._sent.values())

    async def on_frame(self, ws: ClientConnection, frame: str | bytes, received: datetime) -> bool:
        sink = self.feed.sink
        if sink is None:
            return True
        if isinstance(frame, str):
            text = kite_text_to_message(frame)
            if text is None:
                sink.on_reject(c.REJECT_MALFORMED_FRAME, 1)
            elif text.type == "error":
                log.warning("Kite ticker error message: %r", str(text.data)[:200])
            else:
                log.debug("Kite ticker %s message ignored", text.type)
            return True
        parsed = parse_frame(frame, self.feed.ids, received)  # records at once, ticks on demand
        for reason, count in parsed.rejects.items():
            sink.on_reject(reason, count)
        if parsed.unknown:  # e.g. packets already in flight when we unsubscribed
            sink.on_reject(c.REJECT_UNKNOWN_INSTRUMENT, parsed.unknown)
        await sink.on_ticks(parsed.ticks)  # one call per binary frame, empty for heartbeats
        return True  # heartbeats too: the connection works


class KiteLiveFeed(ManagedFeed):
    broker_name = c.BROKER_NAME

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
        token_poll_s: float = 1.0,
    ) -> None:
        if mode not in c.MODES:
            raise ValidationError(f"Kite mode {mode!r} is not one of {sorted(c.MODES)}")
        super().__init__(
            settings,
            backoff_base_s=backoff_base_s,
            backoff_cap_s=backoff_cap_s,
            open_timeout_s=open_timeout_s,
            token_poll_s=token_poll_s,
        )
        self._default_mode = mode
        self._per_connection = max_tokens_per_connection
        self._shards = [_Shard(self, i) for i in range(max_connections)]
        for shard in self._shards:
            self._add_connection(shard)
        self.ids: dict[int, int] = {}  # Kite token -> our instrument id
        self.modes: dict[int, str] = {}
        self._shard_of: dict[int, _Shard] = {}

    @property
    def subscriptions(self) -> Mapping[str, int]:
        return {str(t): i for t, i in self.ids.items()}

    async def subscribe(self, tokens: Mapping[str, int], mode: str | None = None) -> None:
        """Add (or re-mode) instruments; kept across reconnects. ``mode``: ltp, quote or full."""
        mode = mode or self._default_mode
        if mode not in c.MODES:
            raise ValidationError(f"Kite mode {mode!r} is not one of {sorted(c.MODES)}")
        wanted = {_token(t): iid for t, iid in tokens.items()}
        fresh = [t for t in wanted if t not in self.ids]
        capacity = self._per_connection * len(self._shards)
        if len(self.ids) + len(fresh) > capacity:
            raise SubscriptionLimitExceeded(
                f"Kite allows {self._per_connection} instruments per connection and {len(self._shards)} "
                f"connections per API key ({capacity} in all): {len(self.ids)} subscribed + {len(fresh)} new "
                f"= {len(self.ids) + len(fresh)}. Unsubscribe some, or use another API key."
            )
        for t in fresh:
            shard = next(s for s in self._shards if len(s.tokens) < self._per_connection)
            shard.tokens.add(t)
            self._shard_of[t] = shard
        self.ids.update(wanted)
        for t in wanted:
            self.modes[t] = mode
        for shard in {self._shard_of[t] for t in wanted}:
            self._changed(shard)  # the shard's connection sends it (or its next one does)

    async def unsubscribe(self, tokens: Iterable[str]) -> None:
        for t in {_token(t) for t in tokens}:
            if t in self.ids:
                shard = self._shard_of.pop(t)
                shard.tokens.discard(t)
                del self.ids[t], self.modes[t]
                self._changed(shard)


def _token(value: str | int) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) >= 2**32:
        raise UnknownInstrument(f"not a Kite instrument token: {value!r}")
    return int(text)
