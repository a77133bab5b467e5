"""``trading-helper collect``: broker feeds for the shards this process holds a lease on.

A shard (account, connection) of the coordinator's plan is collected by exactly one process: the
one holding its lease (:mod:`.lease`). For each shard held, a :class:`ShardCollector` runs the
account's live feed for the shard's instruments into the shard's own Redis stream
(``th:ticks:<broker>:<account>:<connection>``) through the usual receiver, records the shard's
live coverage (only its own instruments: a range of a dead collector stops at its last extension,
and the gap is backfilled), and follows plan changes (subscribe, unsubscribe). Every collector
also runs the coordinator (one of them, by lease, publishes the plan).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from trading_helper import clock
from trading_helper.brokers.base import Broker, FeedEvent, FeedState
from trading_helper.brokers.registry import build_broker
from trading_helper.cluster.coordinator import Coordinator, PlanReader
from trading_helper.cluster.fence import FencedRedis
from trading_helper.cluster.lease import Held, LeaseGroup
from trading_helper.cluster.leasekeys import lease_key
from trading_helper.cluster.plan import Plan, Shard
from trading_helper.cluster.tasks import run_until_one_fails
from trading_helper.config import Settings
from trading_helper.errors import ConfigError, TradingHelperError
from trading_helper.ingest import keys
from trading_helper.ingest.coverage import LATE_TICK_GRACE, CoverageRecorder
from trading_helper.ingest.receiver import TickReceiver
from trading_helper.ingest.redisconn import REDIS_FAILURES
from trading_helper.looplag import LoopLag
from trading_helper.models import Tick
from trading_helper.storage import sql_instruments
from trading_helper.storage.db import db_errors

log = logging.getLogger(__name__)

COVERAGE_EXTEND_S = 2.0
STATUS_EVERY_S = 1.0


class LeasedSink:
    """The receiver, while the shard's lease surely holds: a frame handed after
    ``valid_until()`` (a process whose loop fell behind its renewals) is dropped and counted
    (``lease_lost``), never appended next to the new owner's, which may carry the same ticks."""

    def __init__(
        self, receiver: TickReceiver, valid_until: Callable[[], float], on_expired: Callable[[], None]
    ) -> None:
        self.receiver = receiver
        self.valid_until = valid_until
        self.on_expired = on_expired
        #: latched: once a frame was dropped, none is taken again (what is stored stays a prefix
        #: of what the connection brought, and its coverage is not claimed past the drop)
        self.expired = False

    def _valid(self) -> bool:
        if not self.expired and time.monotonic() >= self.valid_until():
            self.expired = True
            self.on_expired()  # the shard stops: its coverage ends before this, it is backfilled
        return not self.expired

    async def on_ticks(self, ticks: Sequence[Tick]) -> None:
        if self._valid():
            await self.receiver.on_ticks(ticks)
            return
        if ticks:
            self.receiver.on_reject("lease_lost", len(ticks))

    def on_reject(self, reason: str, count: int = 1) -> None:
        self.receiver.on_reject(reason, count)

    async def on_event(self, event: FeedEvent) -> None:
        # capture may end at any time; it starts (coverage opens) only under the lease
        if event.state != FeedState.CONNECTED or self._valid():
            await self.receiver.on_event(event)


class ShardCollector:
    """One shard's feed, receiver and coverage, in this process."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        shard: Shard,
        valid_until: Callable[[], float] = lambda: float("inf"),
        on_expired: Callable[[], None] = lambda: None,
        lease_token: str | None = None,
    ) -> None:
        self.shard = shard
        self.pool = pool
        account = settings.account(shard.account, shard.broker)
        self.broker: Broker = build_broker(settings, account)
        self.feed = self.broker.live_feed()
        self.coverage = CoverageRecorder(
            pool, self.broker.name, scope=lambda: set(self.feed.subscriptions.values())
        )
        if lease_token is not None:  # appends refused by Redis itself once the lease is another's
            key = lease_key("collector", shard.key)
            redis = FencedRedis(key, lease_token, connection_pool=redis.connection_pool)
        self.receiver = TickReceiver(
            redis,
            stream=keys.shard_stream(settings.TICK_STREAM, shard.key),
            max_entries=settings.STREAM_MAX_ENTRIES,
            local_max_frames=settings.LOCAL_QUEUE_MAX_FRAMES,
            coverage=self.coverage,
        )
        self.sink = LeasedSink(self.receiver, valid_until, on_expired)
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = time.time()

    async def apply(self, instrument_ids: Sequence[int]) -> None:
        """Make the feed carry exactly these instruments."""
        with db_errors("reading a shard's broker tokens"):
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(sql_instruments.TOKENS_OF, self.broker.name, list(instrument_ids))
        tokens = {r["broker_token"]: r["instrument_id"] for r in rows}
        gone = [t for t in self.feed.subscriptions if t not in tokens]
        new = {t: i for t, i in tokens.items() if t not in self.feed.subscriptions}
        if gone:
            await self.feed.unsubscribe(gone)
        if new:
            await self.feed.subscribe(new)

    async def start(self, instrument_ids: Sequence[int]) -> None:
        await self.apply(instrument_ids)
        await self.coverage.start()  # ranges a dead owner left open end at its last extension
        self._tasks = [
            asyncio.create_task(self.feed.run(self.sink), name=f"feed {self.shard.key}"),
            asyncio.create_task(self._extend_coverage(), name=f"coverage {self.shard.key}"),
        ]
        log.info("collecting shard %s: %d instruments", self.shard.key, len(self.feed.subscriptions))

    async def _extend_coverage(self) -> None:
        while True:
            await asyncio.sleep(COVERAGE_EXTEND_S)
            durable = self.receiver.durable_at
            if self.feed.state == FeedState.CONNECTED and durable is not None:
                with contextlib.suppress(TradingHelperError):
                    await self.coverage.extend(min(clock.now(), durable) - LATE_TICK_GRACE)

    async def stop(self, timeout_s: float = 3.0) -> None:
        """Stop the feed (its last event closes the coverage), send what the receiver holds."""
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks, timeout=timeout_s) if self._tasks else None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.receiver.flush(), timeout_s)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.broker.aclose(), timeout_s)

    def status(self, owner: str, epoch: int) -> dict[str, Any]:
        return {
            "owner": owner,
            "epoch": epoch,
            "feed_state": str(self.feed.state),
            "subscriptions": len(self.feed.subscriptions),
            "received": self.receiver.received,
            "rejected": dict(self.receiver.rejected),
            "local_queue_frames": len(self.receiver.local),
            "since": self.started_at,
            "stream": self.receiver.stream,
        }


class Collector:
    """The process: the coordinator, the shard leases, a :class:`ShardCollector` per shard held."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        *,
        shards: Sequence[str] = (),
        max_shards: int | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        try:
            self.only = {Shard.parse(s).key for s in shards}
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.coordinator = Coordinator(settings, pool, redis)
        self.running: dict[str, ShardCollector] = {}
        self._giving_up: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.plan: Plan | None = None
        self._plans = PlanReader(redis)
        self.lag = LoopLag("collector")
        #: the plan the running shards were last brought to (None: none yet, or a step failed)
        self._applied: Plan | None = None
        self.leases = LeaseGroup(
            redis,
            "collector",
            on_acquired=self._acquired,
            on_lost=self._lost,
            ttl_s=settings.LEASE_TTL_S,
            max_held=max_shards,
            fair=not self.only,
            watch=True,  # a dead collector's shards are coverage holes until they are taken
        )

    async def _acquired(self, key: str) -> None:
        assert self.plan is not None
        shard = Shard.parse(key)
        held = self.leases.held[key]
        runner = ShardCollector(
            self.settings,
            self.pool,
            self.redis,
            shard,
            self.leases.validity(key),
            lambda: self._give_up(key, held),
            held.token,
        )
        await runner.start(self.plan.instruments_of(shard))
        self.running[key] = runner

    def _give_up(self, key: str, held: Held) -> None:
        """The shard's lease may have run out under us (this loop fell behind): stop it now, from
        outside its feed task; the next lease step may take it again, on a fresh connection."""
        if key in self._giving_up or self.leases.held.get(key) is not held:
            return  # given up already (a later lease of the same shard is other work)
        log.warning("shard %s: lease not renewed in time; stopping it", key)
        self._giving_up.add(key)
        task = asyncio.create_task(self.leases.give_up(key), name=f"give up {key}")
        task.add_done_callback(lambda _: self._giving_up.discard(key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _lost(self, key: str) -> None:
        runner = self.running.pop(key, None)
        if runner is not None:
            await runner.stop()
            with contextlib.suppress(*REDIS_FAILURES):
                await self.redis.hdel(keys.SHARD_STATUS, key)

    async def _wanted(self) -> list[str]:
        """The plan's non-empty shards (those given with --shard only); running shards follow it
        when it changes."""
        plan = await self._plans.read()
        if plan is None or plan.broker != self.settings.BROKER:
            return list(self.running)  # no plan yet (or another broker's): keep what is held
        self.plan = plan
        if plan is not self._applied:
            self._applied = plan
            for key, runner in list(self.running.items()):
                try:
                    await runner.apply(plan.instruments_of(runner.shard))
                except TradingHelperError as exc:
                    self._applied = None  # tried again at the next step
                    log.warning("shard %s not updated to the plan: %s", key, exc)
        assert self.plan is not None
        names = [s.key for s in self.plan.shards if self.plan.instruments_of(s)]
        return [n for n in names if not self.only or n in self.only]

    async def _publish_status(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            fields: dict[str, str] = {}
            lag = self.lag.take()
            for key, runner in list(self.running.items()):
                with contextlib.suppress(TradingHelperError):
                    await runner.receiver.flush()  # frames held while Redis was away
                held = self.leases.held.get(key)
                fields[key] = json.dumps(runner.status(self.leases.owner, held.epoch if held else 0) | lag)
            with contextlib.suppress(*REDIS_FAILURES):
                if fields:
                    await self.redis.hset(keys.SHARD_STATUS, mapping=fields)  # type: ignore[arg-type]
                await self.redis.expire(keys.SHARD_STATUS, 30)

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self.coordinator.run(), name="coordinator"),
            asyncio.create_task(self.leases.run(self._wanted), name="shard leases"),
            asyncio.create_task(self._publish_status(), name="shard status"),
        ]
        log.info("collector %s started (broker %s)", self.leases.owner, self.settings.BROKER)
        self.lag.start()
        try:
            await run_until_one_fails(tasks)
        finally:
            await self.lag.stop()
