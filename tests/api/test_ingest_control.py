"""Subscriptions go to the ingest service through ``IngestControl``; a refusal persists nothing."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import httpx

from tests.api.conftest import API_TOKEN
from tests.api.server import serve
from tests.storage.helpers import make_instruments
from trading_helper.api.app import create_app
from trading_helper.api.runtime import IngestControl, Runtime
from trading_helper.config import Settings
from trading_helper.errors import SubscriptionLimitExceeded


class LimitedIngest:
    """An ingest service that follows at most ``limit`` instruments (as a broker connection does)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.following: list[int] = []

    async def subscribe(self, instrument_ids: Sequence[int]) -> None:
        new = [i for i in instrument_ids if i not in self.following]
        if len(self.following) + len(new) > self.limit:
            raise SubscriptionLimitExceeded(f"at most {self.limit} instruments per connection")
        self.following += new

    async def unsubscribe(self, instrument_ids: Sequence[int]) -> None:
        self.following = [i for i in self.following if i not in instrument_ids]

    def status(self) -> dict[str, object]:
        return {"feed_state": "connected", "subscriptions": len(self.following), "received": 0, "written": 0}


async def test_subscribe_reaches_ingest_and_a_refusal_persists_nothing(db_pool: asyncpg.Pool) -> None:
    ids = await make_instruments(db_pool, 3, prefix="CTL")
    limited = LimitedIngest(limit=2)
    ingest: IngestControl = limited
    app = create_app(
        Runtime(Settings(API_TOKEN=API_TOKEN, BROKER="sim"), db_pool, ingest=ingest),
        live_channel="th:live:ctl",
    )
    async with (
        serve(app) as url,
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as client,
    ):
        ok = await client.post(
            "/api/instruments/subscribe", json={"instruments": [f"id:{i}" for i in ids[:2]]}
        )
        assert ok.json() == {"subscribed": ids[:2]} and limited.following == ids[:2]
        refused = await client.post("/api/instruments/subscribe", json={"instruments": [f"id:{ids[2]}"]})
        assert refused.status_code == 409 and refused.json()["code"] == "subscription_limit"
        persisted = await db_pool.fetch(
            "SELECT instrument_id FROM subscriptions WHERE instrument_id = ANY($1)", ids
        )
        assert sorted(r[0] for r in persisted) == ids[:2]
        status = (await client.get("/api/status")).json()
        assert status["broker"]["state"] == "connected" and status["ingest"]["subscriptions"] == 2
        await client.post("/api/instruments/unsubscribe", json={"instruments": [f"id:{ids[0]}"]})
        assert limited.following == [ids[1]]
