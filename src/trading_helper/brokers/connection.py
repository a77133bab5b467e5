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

Login: a refused token (HTTP 401/403 on the upgrade, an in-band refusal, an expired token, no
token at all) puts the feed in LOGIN_REQUIRED at once and emits one LOGIN_REQUIRED event with
every subscribed instrument. The connections then wait, polling the token file that
``trading-helper login`` writes (``brokers/tokens.py``) about once a second, and reconnect as soon
as its content or mtime changes: a morning login brings a running feed back without a restart,
and ``run()`` never returns because of a login (a supervisor would take that for a crash).

Coverage events: CONNECTED when a socket carries its instruments (after authentication and the
subscribe messages) and for instruments added later; DISCONNECTED at the last sign of life (a
frame, or a pong where the broker pings) when the socket dies or stalls, so the silence before
the watchdog fired counts as not captured; STOPPED for instruments unsubscribed and when the feed
stops; LOGIN_REQUIRED as above.

Hand-written rather than taken from a library: reconnecting WebSocket helpers (websockets'
``connect`` iterator, the official clients' loops) know neither our login rule, nor coverage
events, nor a watchdog that counts pongs as life; the official clients run on threads/Twisted.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from trading_helper import clock
from trading_helper.brokers.base import FeedEvent, FeedSink, FeedState, LiveFeed
from trading_helper.brokers.retry import backoff_delay
from trading_helper.brokers.tokens import load_token, token_path
from trading_helper.config import Settings
from trading_helper.errors import BrokerError, ConfigError, LoginRequired

log = logging.getLogger(__name__)
# websockets logs the request line (a Kite URL holds the access token) at DEBUG: its own logger,
# kept at INFO, keeps tokens out of the logs whatever the root level is.
_protocol_log = logging.getLogger(f"{__name__}.protocol")
_protocol_log.setLevel(logging.INFO)

#: what identifies one stored token: (file mtime in ns or None, the token); a new login changes it
TokenSignature = tuple[int | None, str]


def _now() -> datetime:
    """Data time (event times, receive times): the one data clock, simulated in the soak."""
    return clock.now()


class Watchdog:
    """Signs of life on one socket. No frame (and no pong, where the broker pings) for
    ``stall_s`` means the socket is dead even if it looks open (a silent stall)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._last = time.monotonic()
        #: wall time of the last sign of life: where coverage ends when the socket dies
        self.alive_at = _now()

    def touch(self) -> datetime:
        self._last = time.monotonic()
        self.alive_at = _now()
        return self.alive_at

    def processed(self) -> None:
        """A frame was handled: the time that took is not silence (frames waiting meanwhile are
        still to be read), so the stall clock restarts; ``alive_at`` stays the frame's arrival."""
        self._last = time.monotonic()

    def remaining(self) -> float:
        return self.stall_s - (time.monotonic() - self._last)


class LoginGate:
    """The feed's login state, shared by all its connections (Kite has up to three)."""

    def __init__(
        self,
        settings: Settings,
        broker: str,
        *,
        poll_s: float,
        on_required: Callable[[str], Awaitable[None]],
        on_change: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._broker = broker
        self._poll_s = poll_s
        self._on_required = on_required
        self._on_change = on_change
        self._refused: TokenSignature | None = None
        #: why a login is needed; None while the stored token is not known to be refused
        self.detail: str | None = None

    @property
    def required(self) -> bool:
        return self.detail is not None

    def _current(self) -> TokenSignature:
        try:
            mtime: int | None = token_path(self._settings, self._broker).stat().st_mtime_ns
        except OSError:
            mtime = None
        return mtime, load_token(self._settings, self._broker)

    async def token(self) -> tuple[str, TokenSignature]:
        """The token to connect with: the stored one; once it was refused, the next new one
        (this waits, polling the token file, as long as it takes)."""
        while True:
            signature = self._current()
            if self.detail is None or signature != self._refused:
                if not signature[1]:
                    await self.refuse(signature, f"no {self._broker} access token stored")
                    continue
                if self.detail is not None:
                    log.info("%s: a new access token was stored; the live feed reconnects", self._broker)
                    self.detail = None
                    self._on_change()
                return signature[1], signature
            await asyncio.sleep(self._poll_s)

    async def refuse(self, signature: TokenSignature, detail: str) -> None:
        """The broker refused the token of ``signature``: report it once per token."""
        if self.detail is not None and signature == self._refused:
            return  # another connection already reported this token
        self._refused, self.detail = signature, detail
        self._on_change()
        log.error(
            "%s login needed: %s; the live feed waits for `trading-helper login %s` and then "
            "resumes by itself",
            self._broker,
            detail,
            self._broker,
        )
        await self._on_required(detail)

    async def check(self) -> None:
        """At start: forget earlier refusals (the token is tried again once, and a refusal is
        reported to this run's sink); no token at all is a login to do, whether or not anything
        is subscribed."""
        self._refused = self.detail = None
        signature = self._current()
        if not signature[1]:
            await self.refuse(signature, f"no {self._broker} access token stored")


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
                at = _now()
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


class ManagedFeed(LiveFeed):
    """A :class:`LiveFeed` whose connections run on :class:`ConnectionLifecycle`.

    Subclasses create their :class:`BrokerConnection` objects with :meth:`_add_connection`,
    keep the subscriptions, and call :meth:`_changed` when they change.
    """

    broker_name: str = ""

    def __init__(
        self,
        settings: Settings,
        *,
        backoff_base_s: float,
        backoff_cap_s: float,
        open_timeout_s: float,
        token_poll_s: float,
    ) -> None:
        self._settings = settings
        self._options = {
            "stall_s": settings.STALL_TIMEOUT_S,
            "backoff_base_s": backoff_base_s,
            "backoff_cap_s": backoff_cap_s,
            "open_timeout_s": open_timeout_s,
        }
        self._gate = LoginGate(
            settings,
            self.broker_name,
            poll_s=token_poll_s,
            on_required=self._on_login_required,
            on_change=self._update_state,
        )
        self._lifecycles: list[ConnectionLifecycle] = []
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._sink: FeedSink | None = None
        self._wake: asyncio.Event | None = None
        self._ever_connected = False
        self.state = FeedState.STOPPED

    def _add_connection(self, conn: BrokerConnection) -> ConnectionLifecycle:
        lifecycle = ConnectionLifecycle(conn, self._gate, self._emit, self._update_state, **self._options)
        self._lifecycles.append(lifecycle)
        return lifecycle

    @property
    def attempts(self) -> int:
        """Connection attempts made so far, over all connections."""
        return sum(lc.attempts for lc in self._lifecycles)

    @property
    def connections(self) -> int:
        """How many connections carry their instruments now."""
        return sum(1 for lc in self._lifecycles if lc.connected)

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def sink(self) -> FeedSink | None:
        return self._sink

    async def run(self, sink: FeedSink) -> None:
        """Stream until cancelled; reconnects by itself and waits out a login (never returns)."""
        if self._wake is not None:
            raise RuntimeError(f"this {self.broker_name} feed is already running")
        self._sink, self._wake = sink, asyncio.Event()
        self.state = FeedState.CONNECTING
        try:
            await self._gate.check()
            while True:
                self._wake.clear()
                self._reconcile()
                self._update_state()
                await self._wake.wait()
        finally:
            live = frozenset().union(*(lc.live for lc in self._lifecycles))
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.clear()
            self._wake = None
            self.state = FeedState.STOPPED
            if live:
                await self._emit(FeedEvent(FeedState.STOPPED, _now(), live, detail="feed stopped"))
            self._sink = None
            for result in results:  # a crashed connection task is a bug: surface it
                if isinstance(result, Exception):
                    raise result

    def _changed(self, conn: BrokerConnection | None = None) -> None:
        """Subscriptions changed (for ``conn``, or for every connection)."""
        for lc in self._lifecycles:
            if conn is None or lc.conn is conn:
                lc.conn.changed.set()
        self._update_state()
        if self._wake is not None:
            self._wake.set()

    def _reconcile(self) -> None:
        """A task for every connection that is wanted; an idle one that is not wanted is stopped
        (a connected one closes itself once its last instruments were unsubscribed)."""
        for index, lc in enumerate(self._lifecycles):
            task = self._tasks.get(index)
            if task is not None and task.done():
                del self._tasks[index]
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
                task = None
            if lc.conn.wanted() and task is None:
                task = self._tasks[index] = asyncio.create_task(lc.run(), name=lc.conn.label)
                task.add_done_callback(lambda _t: self._wake.set() if self._wake is not None else None)
            elif not lc.conn.wanted() and task is not None and not lc.connected:
                task.cancel()

    async def _emit(self, event: FeedEvent) -> None:
        if self._sink is not None:
            await self._sink.on_event(event)

    async def _on_login_required(self, detail: str) -> None:
        await self._emit(
            FeedEvent(
                FeedState.LOGIN_REQUIRED,
                _now(),
                frozenset(self.subscriptions.values()),
                detail=f"{detail}: run `trading-helper login {self.broker_name}`",
            )
        )

    def _update_state(self) -> None:
        if self._wake is None:
            return
        if self._gate.required:
            self.state = FeedState.LOGIN_REQUIRED
            return
        active = [lc for lc in self._lifecycles if lc.conn.wanted()]
        self._ever_connected = self._ever_connected or any(lc.connected for lc in active)
        if active and all(lc.connected for lc in active):
            self.state = FeedState.CONNECTED
        else:
            self.state = FeedState.DISCONNECTED if self._ever_connected else FeedState.CONNECTING
