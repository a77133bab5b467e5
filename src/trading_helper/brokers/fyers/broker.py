"""FyersBroker: the Fyers API v3 adapter behind the one broker interface."""

from __future__ import annotations

from datetime import datetime

from trading_helper.brokers.base import Broker, LiveFeed
from trading_helper.brokers.fyers.constants import BROKER_NAME
from trading_helper.brokers.fyers.http import FyersHttp
from trading_helper.brokers.fyers.websocket import FyersLiveFeed
from trading_helper.config import Settings
from trading_helper.models import Candle, Instrument
from trading_helper.timeframes import Timeframe, parse_timeframe


class FyersBroker(Broker):
    name = BROKER_NAME

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # one HTTP client and one rate limiter for everything this instance asks Fyers
        self._http = FyersHttp(settings)
        self._feed: FyersLiveFeed | None = None

    @property
    def http(self) -> FyersHttp:
        return self._http

    async def fetch_instruments(self) -> list[Instrument]:
        return await self._http.fetch_instruments()

    async def fetch_history(
        self, broker_token: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> list[Candle]:
        """``broker_token`` is the Fyers symbol (``NSE:SBIN-EQ``), as in ``broker_ids["fyers"]``."""
        return await self._http.history(broker_token, parse_timeframe(timeframe), start, end)

    def live_feed(self) -> LiveFeed:
        if self._feed is None:
            self._feed = FyersLiveFeed(self._settings, self._http)
        return self._feed

    async def aclose(self) -> None:
        await self._http.aclose()
