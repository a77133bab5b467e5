"""A fake Kite (real HTTP on 127.0.0.1) with its instruments synced into this module's database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from tests.fakes.kite_server import DEFAULT_INSTRUMENTS, FakeKiteServer
from trading_helper.brokers.kite.broker import KiteBroker
from trading_helper.brokers.tokens import save_token
from trading_helper.storage.instruments import lookup_tokens, sync_instruments

#: extra NSE equities on the fake, so each test can use an instrument of its own
EXTRA_TOKENS = [str(900_001 + n) for n in range(12)]


@dataclass
class KiteSetup:
    server: FakeKiteServer
    broker: KiteBroker
    ids: dict[str, int]  # kite token -> our instrument id


@pytest.fixture(scope="module")
async def kite(db_pool: asyncpg.Pool, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KiteSetup]:
    async with FakeKiteServer() as server:
        server.instruments = [
            *DEFAULT_INSTRUMENTS,
            *[
                {
                    **DEFAULT_INSTRUMENTS[0],
                    "instrument_token": tok,
                    "exchange_token": tok[-4:],
                    "tradingsymbol": f"STOCK{tok}",
                    "name": f"STOCK {tok}",
                }
                for tok in EXTRA_TOKENS
            ],
        ]
        settings = server.settings(tmp_path_factory.mktemp("kite-token"))
        save_token(settings, "kite", server.access_token)
        broker = KiteBroker(settings)
        try:
            instruments = await broker.fetch_instruments()
            async with db_pool.acquire() as conn:
                await sync_instruments(conn, "kite", instruments)
                ids = await lookup_tokens(conn, "kite", [i.broker_ids["kite"] for i in instruments])
            yield KiteSetup(server, broker, ids)
        finally:
            await broker.aclose()
