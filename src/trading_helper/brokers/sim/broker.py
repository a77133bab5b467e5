"""The simulator broker (``BROKER=sim``): the instrument master, broker history and the live feed
of a market that looks like NSE's (see the package's modules)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from trading_helper.brokers.base import Broker
from trading_helper.brokers.sim.bars import history
from trading_helper.brokers.sim.feed import SimFeed, contract_of
from trading_helper.brokers.sim.master import sim_instruments
from trading_helper.config import Settings
from trading_helper.models import Candle, Instrument
from trading_helper.timeframes import Timeframe


class SimBroker(Broker):
    name: ClassVar[str] = "sim"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._feed = SimFeed(settings)
        self.history_calls = 0

    async def fetch_instruments(self) -> list[Instrument]:
        return sim_instruments(max(self.settings.SIM_INSTRUMENTS, 1))

    async def fetch_history(
        self, broker_token: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> list[Candle]:
        """Candles for every bucket of [start, end) inside NSE sessions (none on weekends, holidays,
        or after the contract expired): one seeded path per contract and session, aggregated to
        the timeframe (so timeframes agree)."""
        self.history_calls += 1
        return history(contract_of(broker_token), timeframe, start, end)

    def live_feed(self) -> SimFeed:
        return self._feed
