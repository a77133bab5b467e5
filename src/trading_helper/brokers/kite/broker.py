"""Zerodha Kite Connect behind the one broker interface (built by ``brokers.registry``)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from trading_helper.brokers.base import Broker
from trading_helper.brokers.kite.constants import BROKER_NAME
from trading_helper.brokers.kite.http import KiteHttpClient
from trading_helper.brokers.kite.websocket import KiteLiveFeed
from trading_helper.config import Settings
from trading_helper.models import Candle, Instrument
from trading_helper.timeframes import Timeframe, parse_timeframe


class KiteBroker(Broker):
    """One per process: one HTTP connection pool, one shared historical rate limiter, one feed."""

    name: ClassVar[str] = BROKER_NAME

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._http = KiteHttpClient(settings)
        self._feed: KiteLiveFeed | None = None

    async def fetch_instruments(self) -> list[Instrument]:
        return await self._http.instruments()

    async def fetch_history(
        self, broker_token: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> list[Candle]:
        return await self._http.historical(broker_token, parse_timeframe(timeframe), start, end)

    def live_feed(self) -> KiteLiveFeed:
        if self._feed is None:
            self._feed = KiteLiveFeed(self._settings)
        return self._feed

    async def aclose(self) -> None:
        await self._http.aclose()
