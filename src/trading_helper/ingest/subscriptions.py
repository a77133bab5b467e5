"""The ingest side of subscription changes: LISTEN ``subscriptions_changed`` and apply each one.

Any API replica (``serve --no-ingest`` included) changes the subscription set in PostgreSQL and
NOTIFYs the change (``storage/subscriptions.py``); :class:`SubscriptionListener` runs where the
feed runs, as the supervised task ``subscriptions``, and hands the change to the feed. LISTEN is
session state, so it has a dedicated connection to PostgreSQL itself (``DIRECT_DATABASE_URL``:
never through pgBouncer's transaction pooling, where a session's LISTEN would be lost). On every
(re)connection the whole set is read again, since notifications sent while it was away are gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import asyncpg
from prometheus_client import Counter

from trading_helper.errors import BrokerError, DatabaseUnavailable
from trading_helper.redact import redact
from trading_helper.storage import subscriptions
from trading_helper.storage.db import connect, db_errors

log = logging.getLogger(__name__)

SUBSCRIPTION_CHANGES = Counter(
    "th_subscription_changes_total", "Subscription change notifications applied to the feed"
)
BAD_NOTIFICATIONS = Counter(
    "th_subscription_bad_notifications_total",
    "subscriptions_changed payloads that were no JSON list of ids (the whole set was re-read)",
)

#: seconds between keepalive round trips on the listening connection, and each one's bound
PING_S = 15.0
PING_TIMEOUT_S = 5.0


class Target(Protocol):
    """What the changes are applied to (``IngestService``: its subscribe and unsubscribe)."""

    async def subscribe(self, instrument_ids: Sequence[int]) -> None: ...

    async def unsubscribe(self, instrument_ids: Sequence[int]) -> None: ...


class SubscriptionListener:
    """``dsn``: PostgreSQL itself; ``pool``: where the changed rows are read; ``following``: the
    instruments the feed follows now (for the full re-read)."""

    def __init__(
        self,
        dsn: str,
        pool: asyncpg.Pool,
        target: Target,
        following: Callable[[], set[int]],
    ) -> None:
        self.dsn = dsn
        self.pool = pool
        self.target = target
        self.following = following
        #: set once a LISTEN is in place (tests wait on it)
        self.listening = asyncio.Event()
        self.applied = 0

    async def run(self) -> None:
        """Listen until cancelled; a lost connection raises DatabaseUnavailable (the supervisor
        runs it again after its backoff)."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        conn = await connect(self.dsn)
        try:
            conn.add_termination_listener(lambda _c: queue.put_nowait(None))
            with db_errors("listening for subscription changes"):
                await conn.add_listener(
                    subscriptions.CHANNEL, lambda _c, _pid, _ch, payload: queue.put_nowait(payload)
                )
            self.listening.set()
            await self.resync()  # what changed while nobody listened here
            while True:
                try:
                    payload = await asyncio.wait_for(queue.get(), PING_S)
                except TimeoutError:
                    with db_errors("the subscription listener's keepalive"):
                        await subscriptions.ping(conn, PING_TIMEOUT_S)
                    continue
                if payload is None:
                    raise DatabaseUnavailable("the connection listening for subscription changes closed")
                ids = subscriptions.parse_changed(payload)
                if ids is None:
                    BAD_NOTIFICATIONS.inc()
                    log.warning(
                        "subscriptions_changed payload is no JSON list of ids (%s): re-reading every "
                        "subscription",
                        redact(payload[:80]),
                    )
                    await self.resync()
                else:
                    await self.apply(ids)
        finally:
            self.listening.clear()
            if not conn.is_closed():
                conn.terminate()  # no graceful close to wait for: LISTEN state dies with it

    async def apply(self, instrument_ids: Sequence[int]) -> None:
        """Make the feed follow exactly the subscribed ones among ``instrument_ids``."""
        with db_errors("reading changed subscriptions"):
            async with self.pool.acquire() as conn:
                wanted = await subscriptions.subscribed_among(conn, instrument_ids)
        await self._change(wanted, set(instrument_ids) - wanted)

    async def resync(self) -> None:
        """Make the feed follow exactly the subscription set."""
        with db_errors("reading the subscriptions"):
            async with self.pool.acquire() as conn:
                wanted = await subscriptions.subscribed_ids(conn)
        await self._change(wanted, self.following() - wanted)

    async def _change(self, subscribe: set[int], unsubscribe: set[int]) -> None:
        try:
            if unsubscribe:
                await self.target.unsubscribe(sorted(unsubscribe))
            if subscribe:
                await self.target.subscribe(sorted(subscribe))
        except BrokerError as exc:  # the subscription limit: stored, but the feed cannot follow it
            log.warning("a subscription change could not be applied to the feed: %s", exc)
            return
        self.applied += 1
        SUBSCRIPTION_CHANGES.inc()
