"""The one broker interface every adapter (kite, fyers, sim) implements.

A broker offers three things: its instrument master, historical candles, and a live feed.
The live feed owns its connection(s): connect, authenticate, subscribe, read, watchdog,
reconnect with capped exponential backoff and jitter, resubscribe everything (for Kite and
Fyers: the one lifecycle in :mod:`trading_helper.brokers.connection`). It hands the
ticks of each received frame to a :class:`FeedSink` in one call, so the ingest path can keep
one stream entry per frame.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol

from trading_helper.models import Candle, Instrument, Tick
from trading_helper.timeframes import Timeframe


class FeedState(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # dropped or stalled; the feed is reconnecting
    LOGIN_REQUIRED = "login_required"  # no token, or it was refused: the feed waits for a new one
    STOPPED = "stopped"


@dataclass(slots=True, frozen=True)
class FeedEvent:
    """A connection state change, with the instruments it concerns.

    ``CONNECTED`` starts live coverage for ``instrument_ids`` at ``at``; ``DISCONNECTED`` /
    ``LOGIN_REQUIRED`` / ``STOPPED`` ends it, so the time until the next ``CONNECTED`` is known
    as not captured and can be backfilled from history.
    """

    state: FeedState
    at: datetime
    instrument_ids: frozenset[int] = field(default_factory=frozenset)
    detail: str = ""


class FeedSink(Protocol):
    async def on_ticks(self, ticks: Sequence[Tick]) -> None:
        """The normalised ticks of one received frame (may be empty for heartbeats)."""

    def on_reject(self, reason: str, count: int = 1) -> None:
        """``count`` ticks or frames rejected for ``reason`` (a label: ``malformed_frame`` ...)."""

    async def on_event(self, event: FeedEvent) -> None:
        """A connection state change."""


class LiveFeed(abc.ABC):
    """A broker's live tick feed. ``tokens`` map the broker's token/symbol to our instrument id."""

    state: FeedState = FeedState.STOPPED

    @abc.abstractmethod
    async def subscribe(self, tokens: Mapping[str, int]) -> None:
        """Add instruments (kept across reconnects). Raises SubscriptionLimitExceeded beyond limits."""

    @abc.abstractmethod
    async def unsubscribe(self, tokens: Iterable[str]) -> None:
        """Remove instruments."""

    @abc.abstractmethod
    async def run(self, sink: FeedSink) -> None:
        """Connect and stream until cancelled, reconnecting by itself. On LOGIN_REQUIRED it waits
        for a new token (``trading-helper login`` writing the token file) and resumes: it never
        returns by itself."""

    @property
    @abc.abstractmethod
    def subscriptions(self) -> Mapping[str, int]:
        """What is subscribed now: broker token -> instrument id."""


class Broker(abc.ABC):
    name: ClassVar[str]

    @abc.abstractmethod
    async def fetch_instruments(self) -> list[Instrument]:
        """The broker's instrument master, as broker-neutral instruments (``broker_ids`` filled)."""

    @abc.abstractmethod
    async def fetch_history(
        self, broker_token: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> list[Candle]:
        """Candles with bucket in [start, end), chunked and rate-limited by the adapter."""

    @abc.abstractmethod
    def live_feed(self) -> LiveFeed:
        """The (single) live feed of this broker instance."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release HTTP clients and sockets."""
