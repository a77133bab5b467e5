"""KiteBroker through the registry, against the local fake Kite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes.kite_server import IST, FakeKiteServer
from trading_helper.brokers.kite.broker import KiteBroker
from trading_helper.brokers.kite.websocket import KiteLiveFeed
from trading_helper.brokers.registry import build_broker
from trading_helper.brokers.tokens import save_token
from trading_helper.timeframes import Timeframe


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[tuple[KiteBroker, FakeKiteServer]]:
    async with FakeKiteServer(api_key="broker_test_key") as kite:
        settings = kite.settings(tmp_path)
        save_token(settings, "kite", kite.access_token)
        built = build_broker(settings)
        assert isinstance(built, KiteBroker) and built.name == "kite"
        try:
            yield built, kite
        finally:
            await built.aclose()


async def test_instruments_history_and_one_feed(broker: tuple[KiteBroker, FakeKiteServer]) -> None:
    kite_broker, kite = broker
    instruments = await kite_broker.fetch_instruments()
    assert {i.broker_ids["kite"] for i in instruments} == {"738561", "256265", "12345602", "412675"}
    start = datetime(2024, 1, 1, 9, 15, tzinfo=IST)
    for timeframe, interval in [
        (Timeframe.M1, "minute"),
        (Timeframe.M5, "5minute"),
        (Timeframe.M15, "15minute"),
        (Timeframe.H1, "60minute"),
        (Timeframe.D1, "day"),
    ]:
        candles = await kite_broker.fetch_history("738561", timeframe, start, start + timedelta(days=1))
        assert kite.history_calls[("738561", interval)] == 1
        assert all(c.timeframe is timeframe for c in candles)
    feed = kite_broker.live_feed()
    assert isinstance(feed, KiteLiveFeed) and kite_broker.live_feed() is feed
