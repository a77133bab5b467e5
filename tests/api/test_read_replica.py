"""READ_DATABASE_URL: the API's candle, instrument and export reads go to the replica's pool, writes
(and the read right after a backfill, which a lagging replica may not have yet) to the primary.

The "replica" is a second database of the same schema whose contents differ from the primary's on
purpose, so every answer says which one it was read from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import asyncpg
import pytest

from tests.api.conftest import API_TOKEN, authorised
from tests.db import fresh_database
from tests.fakes.kite_server import DEFAULT_INSTRUMENTS, FakeKiteServer
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.brokers.kite.broker import KiteBroker
from trading_helper.brokers.tokens import save_token
from trading_helper.candles.service import CandleService
from trading_helper.config import Settings
from trading_helper.storage.instruments import lookup_tokens, sync_instruments
from trading_helper.timeframes import IST

TOKEN = str(DEFAULT_INSTRUMENTS[0]["instrument_token"])


@dataclass
class Setup:
    kite: FakeKiteServer
    broker: KiteBroker
    settings: Settings
    replica: asyncpg.Pool
    iid: int


@pytest.fixture
async def setup(db_pool: asyncpg.Pool, admin_dsn: str, tmp_path: Path) -> AsyncIterator[Setup]:
    async with FakeKiteServer() as kite, fresh_database(admin_dsn) as replica_dsn:
        replica = await asyncpg.create_pool(replica_dsn, min_size=1, max_size=4)
        settings = kite.settings(tmp_path / "tokens", API_TOKEN=API_TOKEN)
        save_token(settings, "kite", kite.access_token)
        broker = KiteBroker(settings)
        try:
            instruments = await broker.fetch_instruments()
            ids = []
            for pool in (db_pool, replica):
                async with pool.acquire() as conn:
                    await conn.execute("TRUNCATE broker_candles, fetch_coverage")
                    await sync_instruments(conn, "kite", instruments)
                    ids.append((await lookup_tokens(conn, "kite", [TOKEN]))[TOKEN])
            assert ids[0] == ids[1], "the same instrument ids on both, as on a real replica"
            yield Setup(kite, broker, settings, replica, ids[0])
        finally:
            await broker.aclose()
            await replica.close()


async def broker_candles(pool: asyncpg.Pool, day: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM broker_candles WHERE bucket >= $1::date AND bucket < $1::date + 1",
            date.fromisoformat(day),
        )
    )


async def test_reads_go_to_the_replica_and_writes_to_the_primary(setup: Setup, db_pool: asyncpg.Pool) -> None:
    kite, iid = setup.kite, setup.iid
    # Monday's history exists on the replica only (fetched there beforehand)
    await CandleService(setup.replica, setup.broker).get_candles(
        TOKEN, "1m", _day("2024-02-05"), _day("2024-02-06")
    )
    assert kite.history_calls[(TOKEN, "minute")] == 1
    assert await broker_candles(db_pool, "2024-02-05") == 0

    app = create_app(Runtime(setup.settings, db_pool, broker=setup.broker, read_pool=setup.replica))
    async with authorised(app) as client:
        monday = await client.get(
            "/api/candles",
            params={"instrument": f"id:{iid}", "interval": "1m", "from": "2024-02-05", "to": "2024-02-06"},
        )
        assert monday.status_code == 200, monday.text
        assert len(monday.json()["candles"]) == 375 and monday.json()["backfill"]["broker_calls"] == 0
        assert kite.history_calls[(TOKEN, "minute")] == 1  # the replica had it: no fetch

        # Tuesday is on neither: fetched once, stored on the primary, read back from the primary
        tuesday = await client.get(
            "/api/candles",
            params={"instrument": f"id:{iid}", "interval": "1m", "from": "2024-02-06", "to": "2024-02-07"},
        )
        assert tuesday.status_code == 200, tuesday.text
        assert len(tuesday.json()["candles"]) == 375 and tuesday.json()["backfill"]["broker_calls"] == 1
        assert await broker_candles(db_pool, "2024-02-06") == 375
        assert await broker_candles(setup.replica, "2024-02-06") == 0  # (replication would bring it)

        export = await client.get(
            "/api/export/candles",
            params={"instrument": f"id:{iid}", "from": "2024-02-05", "to": "2024-02-06"},
        )
        assert export.status_code == 200 and len(export.text.strip().splitlines()) == 376  # the replica's

        # an instrument only the replica lists is found by search
        await setup.replica.execute(
            "INSERT INTO instruments (exchange, tradingsymbol, name, segment, instrument_type, lot_size, tick_size) "
            "VALUES ('NSE', 'ONLYONREPLICA', 'ONLY ON REPLICA', 'NSE', 'EQ', 1, 0.05)"
        )
        found = (await client.get("/api/instruments", params={"q": "ONLYONREPLICA"})).json()
        assert [i["tradingsymbol"] for i in found["items"]] == ["ONLYONREPLICA"]

        # a subscription is a write: the primary's table
        assert (
            await client.post("/api/instruments/subscribe", json={"instruments": [f"id:{iid}"]})
        ).status_code == 200
        assert await db_pool.fetchval("SELECT count(*) FROM subscriptions WHERE instrument_id = $1", iid) == 1
        assert await setup.replica.fetchval("SELECT count(*) FROM subscriptions") == 0
        await db_pool.execute("DELETE FROM subscriptions WHERE instrument_id = $1", iid)


def _day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=IST)
