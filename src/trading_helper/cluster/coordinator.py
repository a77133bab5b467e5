"""The coordinator: the subscriptions in PostgreSQL -> a shard plan in Redis (``th:cluster:plan``).

Every collector process runs one; the one holding the ``coordinator`` lease computes the plan
(:func:`~.plan.plan_shards`, the previous plan as the starting point, so a change moves as few
instruments as possible) every :data:`PLAN_EVERY_S`, and at once when PostgreSQL notifies
``subscriptions_changed`` (sent by the API with a subscription change, payload the instrument
ids), and publishes it when it changed. Planning again is skipped while neither a digest of the
subscriptions (one SQL aggregate) nor the published plan's version changed: a full chain's plan
is a few hundred kilobytes of JSON. Collectors and writers read the plan from Redis
(:class:`PlanReader`: the plan itself only when its version changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from trading_helper.cluster.lease import LeaseGroup
from trading_helper.cluster.plan import Pin, Plan, Shard, parse_pins, plan_shards
from trading_helper.config import Settings
from trading_helper.errors import ConfigError, TradingHelperError
from trading_helper.ingest import keys
from trading_helper.ingest.redisconn import REDIS_FAILURES
from trading_helper.storage import sql_instruments
from trading_helper.storage.db import connect, db_errors

log = logging.getLogger(__name__)

PLAN_EVERY_S = 2.0


async def read_plan(redis: aioredis.Redis) -> Plan | None:
    raw = await redis.get(keys.PLAN)
    return Plan.from_json(raw) if raw else None


def plan_version(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]


async def store_plan(redis: aioredis.Redis, text: str) -> str:
    """Publish a plan's text and its version together (MULTI); the version."""
    version = plan_version(text)
    pipe = redis.pipeline(transaction=True)
    pipe.set(keys.PLAN, text)
    pipe.set(keys.PLAN_VERSION, version)
    await pipe.execute()
    return version


class PlanReader:
    """The published plan, read and parsed again only when its version changed (a GET of 16
    bytes per look: collectors and writers look twice a second). The version is read before the
    plan, so a plan read is never older than the version noted with it; a plan stored without
    a version (by hand) is read at every look."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.version: bytes | str | None = None
        self.plan: Plan | None = None

    async def read(self) -> Plan | None:
        version = await self.redis.get(keys.PLAN_VERSION)
        if version is None or version != self.version:
            self.plan = await read_plan(self.redis)
            self.version = version
        return self.plan


class Coordinator:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.broker = settings.BROKER
        try:
            self.pins = parse_pins(settings.SHARD_PINS)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self._changed = asyncio.Event()
        self.leading = False
        self.plans_published = 0
        #: (subscriptions digest, published version) the last plan was made from, and that plan
        self._planned_from: tuple[str, bytes | str | None] | None = None
        self._last_plan: Plan | None = None

    async def compute(self) -> Plan:
        """The plan for the subscriptions now, from the published one."""
        with db_errors("reading the subscriptions"):
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(sql_instruments.SUBSCRIBED_TOKENS, self.broker)
        by_token = {r["broker_token"]: r["instrument_id"] for r in rows}
        pins: dict[int, Pin] = {by_token[t]: p for t, p in self.pins.items() if t in by_token}
        published = await read_plan(self.redis)
        previous: dict[int, Shard] = (
            dict(published.assignment) if published and published.broker == self.broker else {}
        )
        accounts = [a.name for a in self.settings.accounts(self.broker)]
        return plan_shards(self.broker, by_token.values(), accounts, previous=previous, pins=pins)

    async def publish_once(self) -> Plan:
        """Plan and publish when the subscriptions or the published plan changed; the plan."""
        with db_errors("reading the subscriptions' digest"):
            async with self.pool.acquire() as conn:
                digest = await conn.fetchval(sql_instruments.SUBSCRIBED_DIGEST, self.broker)
        source = (digest, await self.redis.get(keys.PLAN_VERSION))
        if self._last_plan is not None and source == self._planned_from:
            return self._last_plan
        plan = await self.compute()
        text = plan.to_json()
        version = plan_version(text).encode()
        if source[1] != version:
            version = (await store_plan(self.redis, text)).encode()
            self.plans_published += 1
            log.info("shard plan published: %s", plan.summary())
        self._planned_from, self._last_plan = (digest, version), plan
        return plan

    def _notified(self, *_: Any) -> None:
        self._changed.set()

    async def _listen(self) -> None:
        """LISTEN subscriptions_changed on a connection of its own (never a pooled one)."""
        while True:
            conn: asyncpg.Connection[Any] | None = None
            try:
                conn = await connect(self.settings.direct_database_url)  # past pgBouncer
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _, ended=closed: ended.set())
                await conn.add_listener(sql_instruments.SUBSCRIPTIONS_CHANNEL, self._notified)
                self._changed.set()  # what changed while nobody listened
                await closed.wait()
            except (TradingHelperError, OSError, asyncpg.PostgresError) as exc:
                log.warning("cannot listen for subscription changes (%s); retrying", exc)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            await asyncio.sleep(2.0)

    async def run(self) -> None:
        """Hold the coordinator lease when free; while held, keep the plan current."""

        async def acquired(_: str) -> None:
            self.leading = True
            self._changed.set()

        async def lost(_: str) -> None:
            self.leading = False

        group = LeaseGroup(
            self.redis, "coordinator", on_acquired=acquired, on_lost=lost, ttl_s=self.settings.LEASE_TTL_S
        )

        async def wanted() -> list[str]:
            return ["plan"]

        listener = asyncio.create_task(self._listen(), name="coordinator-listen")
        leases = asyncio.create_task(group.run(wanted), name="coordinator-lease")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), PLAN_EVERY_S)
                self._changed.clear()
                if not self.leading:
                    continue
                try:
                    await self.publish_once()
                except TradingHelperError as exc:
                    log.warning("shard plan not updated: %s", exc)
                except REDIS_FAILURES as exc:
                    log.warning("shard plan not published (Redis: %s)", exc)
        finally:
            for task in (listener, leases):
                task.cancel()
            await asyncio.gather(listener, leases, return_exceptions=True)
