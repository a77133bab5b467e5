"""Alert evaluation across a restart of the alert service, on a real database, Redis and a local
webhook receiver: a ``once`` rule that fired stays silent, an ``every`` rule's cool-down runs on
from its last trigger (not from the restart), and a trigger whose delivery had not succeeded when
the service stopped is taken up by the next one, numbered on from the attempts already made, with
the id it is stored under."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import redis.asyncio as aioredis

from tests.api.conftest import api_redis_url
from tests.api.server import serve
from tests.fakes.alert_receivers import WebhookReceiver
from tests.fakes.sink import wait_until
from trading_helper.alerts.service import AlertService
from trading_helper.brokers.sim import sim_instruments
from trading_helper.config import Settings
from trading_helper.ingest import codec
from trading_helper.models import Tick
from trading_helper.storage import sql_alerts
from trading_helper.storage.instruments import lookup_tokens, sync_instruments

SECRET = "restart-test-secret-0123456789"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@asynccontextmanager
async def running(
    settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis, channel: str
) -> AsyncIterator[None]:
    """One life of the alert service: its two tasks, from loading the rules to being cancelled."""
    service = AlertService(settings, pool, redis, None, channel=channel)
    tasks = [asyncio.create_task(service.evaluate()), asyncio.create_task(service.deliver_triggers())]
    try:
        await asyncio.wait_for(service.listening.wait(), 10)
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def publish(redis: aioredis.Redis, channel: str, iid: int, at: datetime, price: float) -> None:
    now = datetime.now(UTC)
    await redis.publish(channel, codec.encode_ticks([Tick(iid, at, now, price, 1, 100)]))


async def triggers(pool: asyncpg.Pool, rule_id: int) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, observed_at FROM alert_triggers WHERE rule_id = $1 ORDER BY observed_at", rule_id
    )


async def stored(pool: asyncpg.Pool, counts: dict[int, int], within_s: float = 10.0) -> None:
    """Wait until each rule has its count of stored triggers."""
    deadline = asyncio.get_running_loop().time() + within_s
    while {r: len(await triggers(pool, r)) for r in counts} != counts:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"triggers stored: not {counts} within {within_s}s")
        await asyncio.sleep(0.02)


async def attempts(pool: asyncpg.Pool, rule_id: int) -> list[tuple[int, bool]]:
    rows = await pool.fetch(
        "SELECT d.attempt, d.ok FROM alert_deliveries d JOIN alert_triggers t ON t.id = d.trigger_id "
        "WHERE t.rule_id = $1 ORDER BY d.id",
        rule_id,
    )
    return [(r["attempt"], r["ok"]) for r in rows]


async def test_once_cooldown_and_undelivered_survive_a_restart(db_pool: asyncpg.Pool, redis_url: str) -> None:
    hook = WebhookReceiver(SECRET.encode())
    down = WebhookReceiver(SECRET.encode(), fail_first=1_000_000)  # refuses until told otherwise
    redis = aioredis.from_url(api_redis_url(redis_url))
    channel = f"th:live:test-restart:{uuid.uuid4().hex[:8]}"
    async with serve(hook.app()) as hook_base, serve(down.app()) as down_base:
        settings = Settings(ALERT_WEBHOOK_SECRET=SECRET, ALERT_DELIVERY_ATTEMPTS=30, ALERT_RETRY_MAX_S=0.3)
        async with db_pool.acquire() as conn:
            items = sim_instruments(2)
            await sync_instruments(conn, "sim", items)
            iid = (await lookup_tokens(conn, "sim", [items[0].broker_ids["sim"]]))[items[0].broker_ids["sim"]]

            async def rule(target: str, **fields: object) -> int:
                body = {"on": "tick", "left": "ltp", "op": ">", "value": 100.0, **fields}
                body["channels"] = [{"type": "webhook", "target": target}]
                row = await conn.fetchrow(sql_alerts.INSERT_RULE, iid, None, json.dumps(body), True)
                assert row is not None
                return int(row["id"])

            once = await rule(f"{hook_base}/hook", repeat="once")
            every = await rule(f"{hook_base}/hook", repeat="every", cooldown_s=60)
            stuck = await rule(f"{down_base}/hook", repeat="once")
        try:
            async with running(settings, db_pool, redis, channel):
                await publish(redis, channel, iid, T0, 101.0)
                await wait_until(lambda: len(hook.unique) == 2, 10)
                # delivered while being stored: the rows follow
                await stored(db_pool, {once: 1, every: 1, stuck: 1})
                # the receiver of the third rule refused twice or more before the stop
                await wait_until(lambda: down.requests >= 2, 10)
            made = await attempts(db_pool, stuck)
            assert (
                made
                and all(not ok for _, ok in made)
                and [a for a, _ in made] == list(range(1, len(made) + 1))
            )
            down.fail_first = down.requests  # the receiver is back

            async with running(settings, db_pool, redis, channel):
                # the stopped delivery is taken up at start, numbered on
                await wait_until(lambda: len(down.unique) == 1, 10)
                (stuck_trigger,) = await triggers(db_pool, stuck)
                (payload,) = down.unique.values()
                assert payload["trigger_id"] == stuck_trigger["id"] and payload["rule_id"] == stuck
                await wait_until(lambda: len(hook.unique) == 2, 1)
                # 10 s after the first trigger: inside the cool-down; the once rule stays off
                await publish(redis, channel, iid, T0 + timedelta(seconds=10), 102.0)
                # 61 s after: the cool-down is over for the every rule only
                await publish(redis, channel, iid, T0 + timedelta(seconds=61), 103.0)
                await wait_until(lambda: len(hook.unique) == 3, 10)
                await asyncio.sleep(0.5)  # nothing else arrives
                after = await attempts(db_pool, stuck)
                assert after[: len(made)] == made
                assert after[len(made) :] == [(len(made) + 1, True)]
        finally:
            await redis.aclose()
    assert [r["observed_at"] for r in await triggers(db_pool, once)] == [T0]
    assert [r["observed_at"] for r in await triggers(db_pool, every)] == [T0, T0 + timedelta(seconds=61)]
    assert len(hook.unique) == 3 and sorted(p["left"] for p in hook.unique.values()) == [101.0, 101.0, 103.0]
    rules = {r["id"]: r for r in await db_pool.fetch("SELECT id, enabled, fired_count FROM alert_rules")}
    assert (rules[once]["enabled"], rules[once]["fired_count"]) == (False, 1)
    assert (rules[every]["enabled"], rules[every]["fired_count"]) == (True, 2)


async def test_a_trigger_stored_twice_is_one_row_under_its_first_id(db_pool: asyncpg.Pool) -> None:
    """The insert a trigger is delivered beside: a second insert of its key (a retry whose reply
    was lost, a replay) stores nothing, counts nothing and answers the id it is stored under."""
    async with db_pool.acquire() as conn:
        items = sim_instruments(1)
        await sync_instruments(conn, "sim", items)
        token = items[0].broker_ids["sim"]
        iid = (await lookup_tokens(conn, "sim", [token]))[token]
        body = {"on": "tick", "left": "ltp", "op": ">", "value": 1.0, "repeat": "once"}
        rule = await conn.fetchrow(sql_alerts.INSERT_RULE, iid, None, json.dumps(body), True)
        assert rule is not None
        first, second = [r["id"] for r in await conn.fetch(sql_alerts.RESERVE_TRIGGER_IDS, 2)]
        key = f"r{rule['id']}-replayed-0"
        args = (rule["id"], key, T0, json.dumps({"left": 2.0}), True)
        stored = await conn.fetchrow(sql_alerts.INSERT_TRIGGER, *args, first)
        again = await conn.fetchrow(sql_alerts.INSERT_TRIGGER, *args, second)
        assert stored is not None and again is not None
        assert (stored["id"], stored["fresh"]) == (first, True)
        assert (again["id"], again["fresh"]) == (first, False)
        assert await conn.fetchval("SELECT count(*) FROM alert_triggers WHERE idempotency_key = $1", key) == 1
        after = await conn.fetchrow("SELECT enabled, fired_count FROM alert_rules WHERE id = $1", rule["id"])
        assert after is not None and (after["enabled"], after["fired_count"]) == (False, 1)
