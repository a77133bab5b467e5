"""One connection lifecycle for every broker's live feed (Kite's ticker, Fyers' data socket).

The lifecycle owns what is the same for every broker; the broker supplies what is its own:

    lifecycle (here)                          broker (a BrokerConnection)
    --------------------------------------    ------------------------------------------------
    read the token before every connect       endpoint(token): URL and headers from the token
    login state: a refusal waits for a new    authenticate(ws): in-band login (Fyers)
      token, then resumes by itself           sync(ws): subscribe/unsubscribe messages that make
    capped exponential backoff with jitter      the socket carry what the feed wants
      (reset after a connection that          keepalive(ws, watchdog): pings (Fyers)
      delivered data)                         on_frame(ws, frame, received): frame -> ticks
    the silence watchdog
    resubscribe everything on a new socket
    coverage events with their ids and times

Beside it: the login state in ``login_gate.py``, the silence watchdog in ``watchdog.py``, the
backoff in ``retry.py``, and the feed that runs a feed's connections in ``managed_feed.py``.

Login: the feed's login state (``brokers/login_gate.py``): a refused token puts the feed in
LOGIN_REQUIRED, and the connections wait for a new one; ``run()`` never returns because of a login.

Coverage events: CONNECTED when a socket carries its instruments (after authentication and the
subscribe messages) and for instruments added later; DISCONNECTED at the last sign of life (a
frame, or a pong where the broker pings) when the socket dies or stalls, so the silence before
the watchdog fired counts as not captured; STOPPED for instruments unsubscribed and when the feed
stops; LOGIN_REQUIRED once per refused token, with every subscribed instrument (``login_gate.py``).

Hand-written rather than taken from a library: reconnecting WebSocket helpers (websockets'
``connect`` iterator, the official clients' loops) know neither our login rule, nor coverage
events, nor a watchdog that counts pongs as life; the official clients run on threads/Twisted.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from trading_helper import clock
from trading_helper.brokers.base import FeedEvent, FeedState
from trading_helper.brokers.login_gate import LoginGate
from trading_helper.brokers.retry import backoff_delay
from trading_helper.brokers.watchdog import Watchdog
from trading_helper.errors import BrokerError, ConfigError, LoginRequired

log = logging.getLogger(__name__)
# websockets logs the request line (a Kite URL holds the access token) at DEBUG: its own logger,
# kept at INFO, keeps tokens out of the logs whatever the root level is.
_protocol_log = logging.getLogger(f"{__name__}.protocol")
_protocol_log.setLevel(logging.INFO)


class BrokerConnection(abc.ABC):
    """The broker's half of one connection; :class:`ConnectionLifecycle` drives it."""

    #: for logs and event details: "Kite ticker connection 0", "Fyers data socket"
    label: str = "connection"

    def __init__(self) -> None:
        #: set when the feed's subscriptions changed: the lifecycle then calls ``sync`` again
        self.changed = asyncio.Event()

    def wanted(self) -> bool:
        """Whether this connection should be open (a Kite shard without tokens should not)."""
        return True

    @abc.abstractmethod
    def endpoint(self, token: str) -> tuple[str, dict[str, str]]:
        """URL and headers of the upgrade. Raises LoginRequired for a token that cannot work."""

    def connect_options(self) -> dict[str, Any]:
        """Extra keyword arguments for ``websockets.connect`` (max_size, ping_interval ...)."""
        return {}

    async def authenticate(self, ws: ClientConnection, watchdog: Watchdog) -> None:  # noqa: B027 - optional
        """In-band login after the upgrade. Raises LoginRequired when refused."""

    @abc.abstractmethod
    def reset(self) -> None:
        """A new socket: nothing is subscribed on it yet (per-connection decoders start afresh)."""

    @abc.abstractmethod
    async def sync(self, ws: ClientConnection) -> None:
        """Send what makes the socket carry the feed's subscriptions (all of them on a new socket)."""

    @abc.abstractmethod
    def live_ids(self) -> frozenset[int]:
        """Instrument ids the socket carries after the last ``sync``."""

    async def keepalive(self, ws: ClientConnection, watchdog: Watchdog) -> None:
        """Runs beside the reader while connected; pings, touching ``watchdog`` on pongs."""
        await asyncio.Future()  # nothing to do unless the broker needs pings

    @abc.abstractmethod
    async def on_frame(self, ws: ClientConnection, frame: str | bytes, received: datetime) -> bool:
        """Hand the frame's ticks to the sink; True when it carried market data."""


class ConnectionLifecycle:
    """Connect, authenticate, subscribe, read, watch, reconnect: one connection, to the end."""

    def __init__(
        self,
        conn: BrokerConnection,
        gate: LoginGate,
        emit: Callable[[FeedEvent], Awaitable[None]],
        on_change: Callable[[], None],
        *,
        stall_s: float,
        backoff_base_s: float,
        backoff_cap_s: float,
        open_timeout_s: float,
    ) -> None:
        self.conn = conn
        self._gate = gate
        self._emit = emit
        self._on_change = on_change
        self._stall_s = stall_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._open_timeout_s = open_timeout_s
        self._error: BaseException | None = None
        #: the socket carries its instruments (CONNECTED was emitted for them)
        self.connected = False
        #: ids live on the current socket from its first subscription on (what a DISCONNECTED or
        #: STOPPED ends)
        self.live: frozenset[int] = frozenset()
        #: connection attempts made (diagnostics and tests)
        self.attempts = 0

    async def run(self) -> None:
        attempt = 0
        while self.conn.wanted():
            token, signature = await self._gate.token()
            if not self.conn.wanted():
                return
            try:
                url, headers = self.conn.endpoint(token)
                reason, delivered = await self._connect_and_serve(url, headers)
            except LoginRequired as exc:
                await self._gate.refuse(signature, str(exc))
                attempt = 0
                continue
            if not self.conn.wanted():
                return
            attempt = 1 if delivered else attempt + 1
            delay = backoff_delay(attempt, *self._backoff)
            log.warning("%s: %s; reconnecting in %.2fs", self.conn.label, reason, delay)
            self._on_change()
            await asyncio.sleep(delay)

    async def _connect_and_serve(self, url: str, headers: dict[str, str]) -> tuple[str, bool]:
        """One connection: (why it ended, whether it delivered data). LoginRequired escapes."""
        self.attempts += 1
        options: dict[str, Any] = {
            "open_timeout": self._open_timeout_s,
            "close_timeout": 1.0,
            "logger": _protocol_log,
        }
        try:
            ws = await connect(
                url, additional_headers=headers or None, **(options | self.conn.connect_options())
            )
        except InvalidURI:
            raise ConfigError(
                f"{self.conn.label}: not a valid WebSocket URL"
            ) from None  # it may hold the token
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise LoginRequired(f"{self.conn.label} refused the access token (HTTP {status})") from None
            return f"upgrade refused: HTTP {status}", False
        except (OSError, TimeoutError, WebSocketException) as exc:
            return f"connect failed: {type(exc).__name__}", False
        return await self._serve(ws)

    async def _serve(self, ws: ClientConnection) -> tuple[str, bool]:
        watchdog = Watchdog(self._stall_s)
        self.conn.reset()
        self._error = None
        helpers: list[asyncio.Task[None]] = []
        delivered = False
        login: LoginRequired | None = None
        reason = "closed"
        try:
            await self.conn.authenticate(ws, watchdog)
            self.conn.changed.clear()
            await self.conn.sync(ws)
            self.live = self.conn.live_ids()
            await self._emit(
                FeedEvent(FeedState.CONNECTED, watchdog.touch(), self.live, detail=self.conn.label)
            )
            # CONNECTED in ``state`` only once the event is handled: a caller that sees the state
            # may rely on the coverage it opened
            self.connected = True
            self._on_change()
            helpers = [
                asyncio.create_task(self._sync_loop(ws), name=f"{self.conn.label} sync"),
                asyncio.create_task(self._keepalive(ws, watchdog), name=f"{self.conn.label} keepalive"),
            ]
            while True:
                remaining = watchdog.remaining()
                if remaining <= 0:
                    ws.transport.abort()  # a stalled peer will not answer a closing handshake
                    reason = f"stalled: no sign of life for {self._stall_s:g}s"
                    break
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
                    # lands as recv completes, and a busy socket would then never stop
                    async with asyncio.timeout(remaining):
                        frame = await ws.recv()
                except TimeoutError:
                    continue  # a pong may have arrived meanwhile: re-check the clock
                if await self.conn.on_frame(ws, frame, watchdog.touch()):
                    delivered = True
                watchdog.processed()
                # websockets hands queued frames over without suspending: behind a backlog this
                # loop would parse frame after frame for seconds while nothing else ran (lease
                # renewals, pongs, the other shards' feeds; collectors lost every lease that way)
                await asyncio.sleep(0)
        except ConnectionClosed as exc:
            if isinstance(self._error, LoginRequired):
                login = self._error
            elif self._error is not None:
                reason = f"{type(self._error).__name__}: {self._error}"
            elif not self.conn.wanted():
                reason = "no instruments left"
            else:
                reason = f"connection closed (close code {exc.rcvd.code if exc.rcvd is not None else 'none'})"
        except LoginRequired as exc:
            login = exc
        except BrokerError as exc:  # e.g. symbol lookups failing with 5xx/429 after retries
            reason = f"{type(exc).__name__}: {exc}"
        except TimeoutError:
            reason = "timed out authenticating"
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            was_connected, live = self.connected, self.live
            self.connected, self.live = False, frozenset()
            await ws.close()
            self._on_change()
        if was_connected and live:
            detail = str(login) if login is not None else reason
            await self._emit(FeedEvent(FeedState.DISCONNECTED, watchdog.alive_at, live, detail=detail))
        if login is not None:
            raise login
        return reason, delivered

    async def _sync_loop(self, ws: ClientConnection) -> None:
        """Apply subscription changes made while connected, and report the coverage they change."""
        try:
            while True:
                await self.conn.changed.wait()
                self.conn.changed.clear()
                await self.conn.sync(ws)
                now_live = self.conn.live_ids()
                added, removed, self.live = now_live - self.live, self.live - now_live, now_live
                at = clock.now()
                if added:
                    await self._emit(FeedEvent(FeedState.CONNECTED, at, added, detail="subscribed"))
                if removed:
                    await self._emit(FeedEvent(FeedState.STOPPED, at, removed, detail="unsubscribed"))
                if not self.conn.wanted():
                    await ws.close()  # nothing left to carry: the reader sees the close and ends
                    return
        except ConnectionClosed:
            return
        except (BrokerError, OSError) as exc:
            self._error = exc  # the reader sees the socket end and reports this
            ws.transport.abort()

    async def _keepalive(self, ws: ClientConnection, watchdog: Watchdog) -> None:
        try:
            await self.conn.keepalive(ws, watchdog)
        except ConnectionClosed:
            return
