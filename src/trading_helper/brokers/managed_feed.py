"""A live feed made of connections on the one lifecycle (``brokers/connection.py``): Kite's
ticker and Fyers' data socket are both a :class:`ManagedFeed`. It starts a task per wanted
connection, shares one :class:`~trading_helper.brokers.login_gate.LoginGate` between them, sums
their states into the feed's, and ends their coverage (STOPPED) when the feed stops."""

from __future__ import annotations

import asyncio

from trading_helper import clock
from trading_helper.brokers.base import FeedEvent, FeedSink, FeedState, LiveFeed
from trading_helper.brokers.connection import BrokerConnection, ConnectionLifecycle
from trading_helper.brokers.login_gate import LoginGate
from trading_helper.config import Settings


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
                await self._emit(FeedEvent(FeedState.STOPPED, clock.now(), live, detail="feed stopped"))
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
                clock.now(),
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
