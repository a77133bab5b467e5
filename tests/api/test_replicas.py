"""Stateless API replicas (``trading-helper serve --no-ingest``) as real processes beside the
ingest service: two replicas asked for the same uncovered history at once make one broker call
between them and answer the same candles; alerts run in one replica at a time (a standby takes
them over); a subscription made through a replica reaches the feed
of the ``serve`` process (NOTIFY), whose ticks reach the replica's WebSocket clients (Redis pub/sub),
and an unsubscribe through it stops them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from tests.api.conftest import API_TOKEN, ingest_redis_url
from tests.api.server import serve
from tests.api.test_serve_command import Serve, prepare, serve_env, serving
from tests.e2e.helpers import eventually
from tests.fakes.alert_receivers import WebhookReceiver
from tests.fakes.kite_server import DEFAULT_INSTRUMENTS, FakeKiteServer
from tests.services import _throwaway_redis
from tests.storage.helpers import reset_market_data
from trading_helper.brokers.kite.broker import KiteBroker
from trading_helper.brokers.tokens import save_token
from trading_helper.ingest import codec, keys
from trading_helper.models import Tick
from trading_helper.storage.instruments import lookup_tokens, sync_instruments

HOOK_SECRET = "webhook-secret-for-replica-tests"


async def test_two_replicas_asked_for_the_same_uncovered_history_call_the_broker_once(
    tmp_path: Path, db_dsn: str, db_pool: asyncpg.Pool, redis_url: str
) -> None:
    await reset_market_data(db_pool)
    async with FakeKiteServer() as kite:
        kite.history_delay_s = 1.0  # a broker's latency: the second replica asks while the first waits
        token_dir = tmp_path / "tokens"
        settings = kite.settings(token_dir)
        save_token(settings, "kite", kite.access_token)
        broker = KiteBroker(settings)
        try:
            instruments = await broker.fetch_instruments()
        finally:
            await broker.aclose()
        token = str(DEFAULT_INSTRUMENTS[0]["instrument_token"])
        async with db_pool.acquire() as conn:
            await sync_instruments(conn, "kite", instruments)
            iid = (await lookup_tokens(conn, "kite", [token]))[token]
        env = serve_env(
            db_dsn,
            ingest_redis_url(redis_url),
            f"th:replicas:{uuid.uuid4().hex[:8]}",
            BROKER="kite",
            KITE_API_URL=kite.api_url,
            KITE_WS_URL=kite.ws_url,
            KITE_LOGIN_URL=kite.login_url,
            KITE_API_KEY=kite.api_key,
            KITE_API_SECRET=kite.api_secret,
            TOKEN_DIR=str(token_dir),
        )
        # a Tuesday session of the past, neither captured nor fetched
        params = {"instrument": f"id:{iid}", "interval": "1m", "from": "2024-02-06", "to": "2024-02-07"}
        async with serving(tmp_path, env, "--no-ingest") as a, serving(tmp_path, env, "--no-ingest") as b:
            answers = await asyncio.gather(
                a.client.get("/api/candles", params=params), b.client.get("/api/candles", params=params)
            )
            assert [r.status_code for r in answers] == [200, 200], [r.text[:300] for r in answers]
            bodies = [r.json() for r in answers]
            assert kite.history_calls[(token, "minute")] == 1
            assert sorted(body["backfill"]["broker_calls"] for body in bodies) == [0, 1]
            assert len(bodies[0]["candles"]) == 375  # 09:15-15:30, every minute from the broker
            assert bodies[0]["candles"] == bodies[1]["candles"]
            assert {c["source"] for c in bodies[0]["candles"]} == {"broker"}
            # the replicas run no ingest: no feed, writer or housekeeping of their own
            for replica in (a, b):
                status = (await replica.client.get("/api/status")).json()
                assert not {"feed", "writer", "housekeeping", "subscriptions"} & set(status["tasks"])


@contextlib.contextmanager
def own_redis() -> Iterator[str]:
    """A Redis server of this test's own: pub/sub channels are server-wide, and other suites'
    simulators publish on the same live channel."""
    with _throwaway_redis() as url:
        yield url


async def ticks_of(ws: ClientConnection, iid: int, within_s: float) -> list[dict[str, Any]]:
    """The tick messages of ``iid`` received within ``within_s``."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + within_s
    with contextlib.suppress(TimeoutError):
        while time.monotonic() < deadline:
            async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                message = json.loads(await ws.recv())
            if message["type"] == "tick" and message["data"]["instrument_id"] == iid:
                got.append(message)
    return got


async def feed_follows(run: Serve) -> int:
    return int((await run.client.get("/api/status")).json()["ingest"]["subscriptions"])


async def test_a_subscription_through_a_replica_reaches_the_feed_and_the_replica_relays_its_ticks(
    tmp_path: Path, db_dsn: str, db_pool: asyncpg.Pool
) -> None:
    await prepare(db_pool)
    await db_pool.execute("TRUNCATE subscriptions")
    iid = await db_pool.fetchval("SELECT min(instrument_id) FROM instrument_broker_ids WHERE broker = 'sim'")
    with own_redis() as redis:
        env = serve_env(db_dsn, redis, f"th:replicas:{uuid.uuid4().hex[:8]}")
        async with serving(tmp_path, env) as ingest, serving(tmp_path, env, "--no-ingest") as replica:

            async def listening() -> bool:
                tasks = (await ingest.client.get("/api/status")).json()["tasks"]
                return bool(tasks.get("subscriptions", {}).get("state") == "running")

            await eventually(listening, "the ingest service listens for subscription changes", within_s=20)
            assert await feed_follows(ingest) == 0
            ws_url = f"ws://127.0.0.1:{replica.port}/api/ws/ticks?token={API_TOKEN}"
            async with connect(ws_url) as ws:
                await ws.send(json.dumps({"action": "subscribe", "instruments": [f"id:{iid}"]}))
                async with asyncio.timeout(5):
                    assert json.loads(await ws.recv())["type"] == "subscribed"
                assert await ticks_of(ws, iid, 0.5) == []  # nobody follows it yet

                answer = await replica.client.post(
                    "/api/instruments/subscribe", json={"instruments": [f"id:{iid}"]}
                )
                assert answer.status_code == 200 and answer.json()["subscribed"] == [iid], answer.text
                await eventually(lambda: _is(feed_follows(ingest), 1), "the feed follows it", within_s=10)
                assert len(await ticks_of(ws, iid, 3.0)) > 0, "no tick relayed by the replica"

                answer = await replica.client.post(
                    "/api/instruments/unsubscribe", json={"instruments": [f"id:{iid}"]}
                )
                assert answer.status_code == 200, answer.text
                await eventually(lambda: _is(feed_follows(ingest), 0), "the feed dropped it", within_s=10)
                await ticks_of(ws, iid, 0.5)  # frames already on their way
                assert await ticks_of(ws, iid, 1.0) == []
            listed = (await ingest.client.get("/api/instruments/subscriptions")).json()
            assert listed["total"] == 0
            assert "Traceback" not in replica.output() + ingest.output()


async def _is(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def test_alerts_run_in_one_replica_at_a_time_and_a_standby_takes_them_over(
    tmp_path: Path, db_dsn: str, db_pool: asyncpg.Pool
) -> None:
    """Two replicas, one alert evaluation: a trigger reaches the webhook once (not once a
    replica), a rule made through the standby is followed by the holder, and when the holder is
    SIGKILLed the standby takes the alerts over within seconds."""
    await prepare(db_pool)
    iid = await db_pool.fetchval("SELECT min(instrument_id) FROM instrument_broker_ids WHERE broker = 'sim'")
    hook = WebhookReceiver(HOOK_SECRET.encode())
    name = f"alerts:{keys.LIVE_CHANNEL}"
    with own_redis() as redis_url:
        redis = aioredis.from_url(redis_url)
        env = serve_env(
            db_dsn, redis_url, f"th:replicas:{uuid.uuid4().hex[:8]}", ALERT_WEBHOOK_SECRET=HOOK_SECRET
        )
        async with (
            serve(hook.app()) as hook_base,
            serving(tmp_path, env, "--no-ingest") as a,
            serving(tmp_path, env, "--no-ingest") as b,
        ):

            async def holders() -> list[Serve]:
                return [
                    r
                    for r in (a, b)
                    if name in (await r.client.get("/api/status")).json()["singletons"]["held"]
                ]

            await eventually(lambda: _is_len(holders(), 1), "one replica runs the alerts", within_s=10)
            (holder,) = await holders()
            standby = b if holder is a else a
            assert name in (await standby.client.get("/api/status")).json()["singletons"]["standby"]
            for replica in (holder, standby):  # the lease loop is a supervised task (/health if down)
                tasks = (await replica.client.get("/api/status")).json()["tasks"]
                assert tasks["api-singletons"]["state"] == "running", tasks

            async def fire(through: Serve, price: float) -> None:
                body = {"instrument": f"id:{iid}", "on": "tick", "left": "ltp", "op": ">", "value": price - 1}
                body["channels"] = [{"type": "webhook", "target": f"{hook_base}/hook"}]
                created = await through.client.post("/api/alerts", json=body)
                assert created.status_code == 201, created.text
                await asyncio.sleep(0.3)  # the rule's announcement reaches the holder first
                now = datetime.now(UTC)
                await redis.publish(
                    keys.LIVE_CHANNEL, codec.encode_ticks([Tick(iid, now, now, price, 1, 10)])
                )

            await fire(standby, 1000.0)  # made through the standby, evaluated by the holder
            await eventually(lambda: _true(len(hook.unique) == 1), "the trigger is delivered", within_s=10)
            await asyncio.sleep(1.0)
            assert hook.requests == 1, "delivered more than once: more than one replica evaluates"

            killed_at = time.monotonic()
            holder.proc.kill()
            await holder.proc.wait()
            await eventually(
                lambda: _is_len(holders_of(standby, name), 1), "the standby took the alerts", within_s=10
            )
            took = time.monotonic() - killed_at
            assert took < 10, took

            await fire(standby, 2000.0)
            await eventually(
                lambda: _true(len(hook.unique) == 2), "the next trigger is delivered", within_s=10
            )
            await asyncio.sleep(1.0)
            assert hook.requests == 2
            assert "Traceback" not in standby.output()
        await redis.aclose()


async def holders_of(replica: Serve, name: str) -> list[Serve]:
    held = (await replica.client.get("/api/status")).json()["singletons"]["held"]
    return [replica] if name in held else []


async def _is_len(value: Any, expected: int) -> bool:
    return len(await value) == expected


async def _true(value: bool) -> bool:
    return value
