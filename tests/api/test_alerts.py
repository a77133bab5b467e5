"""/api/alerts over real sockets, a real database and Redis, the fake Kite, a local webhook
receiver and a local Telegram Bot API stand-in: rules are stored, checked (422 with a reason),
limited, subscribe their instrument; ticks published on the live channel fire them; a receiver
that fails 3 times gets the trigger exactly once after deduplication, every attempt is in the
history, and the WebSocket clients see the alert as it fires."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from tests.api.conftest import API_TOKEN, running_api
from tests.api.server import serve
from tests.fakes.alert_receivers import TelegramStandIn, WebhookReceiver
from tests.fakes.kite_server import FakeKiteServer
from tests.fakes.sink import wait_until
from trading_helper.ingest import codec
from trading_helper.models import Tick

SECRET = "webhook-secret-for-tests-0123"
BOT_TOKEN = "123456:TEST-bot-token"


@dataclass
class AlertApi:
    url: str
    client: httpx.AsyncClient
    redis: aioredis.Redis
    channel: str
    hook: WebhookReceiver
    hook_url: str
    telegram: TelegramStandIn
    pool: asyncpg.Pool


@pytest.fixture(scope="module")
async def alert_api(
    db_pool: asyncpg.Pool, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AlertApi]:
    hook = WebhookReceiver(SECRET.encode(), fail_first=3)
    telegram = TelegramStandIn(BOT_TOKEN, fail_first=1)
    async with (
        FakeKiteServer() as kite,
        serve(hook.app()) as hook_base,
        serve(telegram.app()) as tg_base,
        running_api(
            db_pool,
            redis_url,
            tmp_path_factory.mktemp("alerts-kite"),
            kite,
            ALERT_WEBHOOK_SECRET=SECRET,
            TELEGRAM_BOT_TOKEN=BOT_TOKEN,
            TELEGRAM_API_URL=f"{tg_base}/bot",
            ALERTS_MAX_RULES=5,
        ) as api,
    ):
        await wait_until(lambda: api.app.state.alerts.listening.is_set(), 10)
        yield AlertApi(
            api.url, api.client, api.redis, api.channel, hook, f"{hook_base}/hook", telegram, db_pool
        )


def rule(**fields: Any) -> dict[str, Any]:
    return {"instrument": "NSE:RELIANCE", "on": "tick", "left": "ltp", "op": ">", "value": 2500, **fields}


async def iid_of(api: AlertApi, ref: str) -> int:
    found = await api.client.get(
        "/api/instruments", params={"q": ref.split(":")[1], "exchange": ref.split(":")[0]}
    )
    return int(found.json()["items"][0]["id"])


async def test_a_trigger_reaches_a_failing_webhook_exactly_once_and_telegram_and_the_websocket(
    alert_api: AlertApi,
) -> None:
    api = alert_api
    body = rule(
        name="RELIANCE over 2500",
        channels=[{"type": "webhook", "target": api.hook_url}, {"type": "telegram", "target": "777"}],
    )
    created = await api.client.post("/api/alerts", json=body)
    assert created.status_code == 201, created.text
    alert = created.json()
    assert alert["condition"] == "ltp > 2500 on tick" and alert["enabled"] is True
    # its instrument is subscribed (persisted)
    subs = (await api.client.get("/api/instruments/subscriptions")).json()
    assert alert["instrument_id"] in [s["id"] for s in subs["items"]]

    iid = alert["instrument_id"]
    async with connect(f"{api.url.replace('http', 'ws')}/api/ws/ticks?token={API_TOKEN}") as ws:
        now = datetime.now(UTC)
        below = Tick(iid, now, now, 2400.0, 1, 100)
        above = Tick(iid, now, now, 2510.5, 1, 101)
        await api.redis.publish(api.channel, codec.encode_ticks([below, above, above]))
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "alert" and message["data"]["rule_id"] == alert["id"]
    assert message["data"]["left"] == 2510.5

    await wait_until(lambda: len(api.hook.unique) == 1 and len(api.telegram.sent) == 1, 15)
    await asyncio.sleep(0.5)  # nothing more arrives: "once" fired once, the receiver saw 4 requests
    assert api.hook.requests == 4 and api.hook.bad_signatures == 0 and len(api.hook.unique) == 1
    (payload,) = api.hook.unique.values()
    assert payload["rule_id"] == alert["id"] and payload["left"] == 2510.5
    assert "2510.5" in api.telegram.sent[0]["text"] and api.telegram.calls == 2

    history = (await api.client.get(f"/api/alerts/{alert['id']}/history")).json()
    (trigger,) = history["items"]
    hooks = [a for a in trigger["attempts"] if a["channel"] == "webhook"]
    assert [(a["attempt"], a["ok"], a["status"]) for a in hooks] == [
        (1, False, 503),
        (2, False, 503),
        (3, False, 503),
        (4, True, 204),
    ]
    grams = [(a["attempt"], a["ok"]) for a in trigger["attempts"] if a["channel"] == "telegram"]
    assert grams == [(1, False), (2, True)]
    # a "once" rule is switched off after its trigger
    after = (await api.client.get(f"/api/alerts/{alert['id']}")).json()
    assert after["enabled"] is False and after["fired_count"] == 1
    assert (await api.client.delete(f"/api/alerts/{alert['id']}")).status_code == 204
    assert (await api.client.get(f"/api/alerts/{alert['id']}")).status_code == 404
    # deleted, its history is kept
    assert len((await api.client.get(f"/api/alerts/{alert['id']}/history")).json()["items"]) == 1


async def test_rules_that_cannot_be_evaluated_are_422_with_their_reason(alert_api: AlertApi) -> None:
    cases = [
        (rule(left="close"), "unknown_field"),
        (rule(on="5m", left="ema:0"), "unknown_field"),
        (rule(on="5m", left="macd.nope"), "unknown_output"),
        (rule(value=None), "needs_value"),
        (rule(on="5m", left="close", value=None, right="close"), "same_series"),
        (rule(channels=[{"type": "webhook", "target": "ftp://x"}]), "bad_channel"),
    ]
    for body, reason in cases:
        answer = await alert_api.client.post("/api/alerts", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["code"] == "invalid_alert" and answer.json()["reason"] == reason, answer.text
    unknown = await alert_api.client.post("/api/alerts", json=rule(instrument="NSE:NOPE"))
    assert unknown.status_code == 404


async def test_list_patch_limit_and_one_instrument_against_another(alert_api: AlertApi) -> None:
    api = alert_api
    for item in (await api.client.get("/api/alerts")).json()["items"]:
        await api.client.delete(f"/api/alerts/{item['id']}")
    made = []
    for n in range(5):
        answer = await api.client.post(
            "/api/alerts",
            json=rule(on="5m", left="close", value=None, right_instrument="NSE:NIFTY 50", name=f"r{n}"),
        )
        assert answer.status_code == 201, answer.text
        made.append(answer.json())
    assert made[0]["condition"].startswith("close > close of id:")
    over = await api.client.post("/api/alerts", json=rule())
    assert over.status_code == 409 and over.json()["code"] == "alert_limit"
    listed = (await api.client.get("/api/alerts")).json()
    assert listed["total"] == 5 and [a["name"] for a in listed["items"]] == [f"r{n}" for n in range(5)]
    patched = await api.client.patch(
        f"/api/alerts/{made[0]['id']}", json={"value": 10, "op": "crosses_below"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["condition"] == "close crosses_below 10 on 5m"
    bad = await api.client.patch(f"/api/alerts/{made[0]['id']}", json={"left": "nope"})
    assert bad.status_code == 422 and bad.json()["reason"] == "unknown_field"
    assert (await api.client.patch("/api/alerts/999999999", json={"name": "x"})).status_code == 404
    for item in made:
        assert (await api.client.delete(f"/api/alerts/{item['id']}")).status_code == 204
