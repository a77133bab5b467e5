"""The coordinator: the subscriptions in PostgreSQL -> a shard plan in Redis (``th:cluster:plan``).

Every collector process runs one; the one holding the ``coordinator`` lease computes the plan
(:func:`~.plan.plan_shards`, the previous plan as the starting point, so a change moves as few
instruments as possible) every :data:`PLAN_EVERY_S`, and at once when PostgreSQL notifies
``subscriptions_changed`` (sent by the API with a subscription change, payload the instrument
ids), and publishes it when it changed. Collectors and writers read the plan from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        plan = await self.compute()
        text = plan.to_json()
        if (await self.redis.get(keys.PLAN)) != text.encode():
            await self.redis.set(keys.PLAN, text)
            self.plans_published += 1
            log.info("shard plan published: %s", plan.summary())
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
