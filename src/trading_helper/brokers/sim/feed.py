"""The simulator's live feed: ticks of the subscribed contracts, frame by frame, like a broker's.

Every tick is priced from its underlying's spot at that instant: the market's seeded path
(:func:`.market.spot_at`, the same the history follows) plus a small mean-reverting noise per
underlying, so a chain's futures and options move together and the live feed continues the
history. Ticks look like Kite's full mode: an index carries only its price; cash, futures and
options carry the last quantity (lots for derivatives), the day's cumulative volume, the average
price and one level of bid/ask; only futures and options carry open interest. Liquid contracts
(indices, futures, cash, options near the money) tick often, far options rarely; an expired
contract no longer ticks. The feed runs at any hour (the demo is alive at night too): outside a
session the path stands at the last close and only the noise moves.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from trading_helper import clock
from trading_helper.brokers.base import FeedEvent, FeedSink, FeedState, LiveFeed
from trading_helper.brokers.sim.contracts import Contract, Underlying, decode_token
from trading_helper.brokers.sim.market import (
    TRADE_SIZES,
    adhoc_underlying,
    fair_prices,
    liquidity,
    on_tick,
    open_interest_base,
    spot_at,
    trade_unit,
    trading,
)
from trading_helper.brokers.sim.pricing import expires_at
from trading_helper.config import Settings
from trading_helper.models import Tick
from trading_helper.timeframes import IST

SESSION_OPEN, BURST_UNTIL = time(9, 15), time(9, 30)
#: the noise's pull back to the path per second, and the seconds of a session (its volatility scale)
NOISE_REVERSION, SESSION_SECONDS = 0.05, 22_500


def contract_of(token: str) -> Contract:
    """The contract a token names; an unknown token is a stock of its own."""
    return decode_token(token) or Contract(adhoc_underlying(token), "EQ")


@dataclass(slots=True)
class _Noise:
    value: float  # log deviation from the path
    at: datetime


@dataclass(slots=True)
class _State:
    instrument_id: int
    contract: Contract
    tick: float
    day: date
    volume: int = 0
    turnover: float = 0.0
    oi: int | None = None


class SimFeed(LiveFeed):
    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self.rate = settings.SIM_TICKS_PER_SECOND
        self.rng = rng or random.Random(7)
        self._subs: dict[str, int] = {}
        self._states: dict[str, _State] = {}
        self._noise: dict[Underlying, _Noise] = {}
        self._weights: tuple[list[str], list[float]] | None = None
        self._weighed_at = self._weighed_until = datetime.min.replace(tzinfo=IST)
        self.state = FeedState.STOPPED
        self.paused = asyncio.Event()
        self.paused.set()
        self._sink: FeedSink | None = None  # while run() runs

    @property
    def subscriptions(self) -> Mapping[str, int]:
        return dict(self._subs)

    async def subscribe(self, tokens: Mapping[str, int]) -> None:
        new = frozenset(i for t, i in tokens.items() if t not in self._subs)
        self._subs.update(tokens)
        self._weights = None
        if new and self._sink is not None:  # capture of these starts now, like a real feed reports
            await self._sink.on_event(FeedEvent(FeedState.CONNECTED, clock.now(), new, "subscribed"))

    async def unsubscribe(self, tokens: Iterable[str]) -> None:
        tokens = list(tokens)
        gone = frozenset(i for t in tokens if (i := self._subs.pop(t, None)) is not None)
        for token in tokens:
            self._states.pop(token, None)
        self._weights = None
        if gone and self._sink is not None:
            await self._sink.on_event(FeedEvent(FeedState.STOPPED, clock.now(), gone, "unsubscribed"))

    def spot(self, u: Underlying, now: datetime) -> float:
        """The underlying's live spot at ``now``: the market's path times the noise."""
        noise = self._noise.get(u)
        if noise is None:
            noise = self._noise[u] = _Noise(0.0, now)
        dt = min(max((now - noise.at).total_seconds(), 0.0), 60.0)
        if dt > 0:
            sigma = u.daily_vol / math.sqrt(SESSION_SECONDS) * math.sqrt(dt)
            noise.value = noise.value * math.exp(-NOISE_REVERSION * dt) + self.rng.gauss(0.0, sigma)
            noise.at = now
        return spot_at(u, now) * math.exp(noise.value)

    def _state(self, token: str, now: datetime) -> _State:
        st = self._states.get(token)
        day = now.astimezone(IST).date()
        if st is None:
            contract = contract_of(token)
            st = self._states[token] = _State(self._subs[token], contract, contract.tick, day)
            st.oi = open_interest_base(contract, spot_at(contract.underlying, now), day)
        if st.day != day:
            st.volume, st.turnover, st.day = 0, 0.0, day
        return st

    def _chooser(self, now: datetime) -> tuple[list[str], list[float]]:
        """The subscribed tokens and their cumulative weights (how often each ticks; 0 for a contract
        not trading), weighed again after a subscription change, every minute (the money moves
        with the spot) and when a weighed contract expires."""
        if self._weights is None or not (self._weighed_at <= now < self._weighed_until):
            tokens = list(self._subs)
            weights = []
            until = now + timedelta(minutes=1)
            for token in tokens:
                contract = contract_of(token)
                live = trading(contract, now)
                weights.append(liquidity(contract, spot_at(contract.underlying, now)) if live else 0.0)
                if live and contract.expiry is not None:
                    until = min(until, expires_at(contract.expiry))
            self._weights, self._weighed_at, self._weighed_until = (
                (tokens, list(itertools.accumulate(weights))),
                now,
                until,
            )
        return self._weights

    def _quotes(
        self, states: Mapping[str, _State], spots: Mapping[Underlying, float], now: datetime
    ) -> dict[str, tuple[float, float]]:
        """Each contract's price and half spread at ``now`` (the spread wider far from the money),
        every option priced in one call."""
        items = list(states.items())
        prices = fair_prices([(st.contract, spots[st.contract.underlying], now) for _, st in items])
        return {
            token: (
                on_tick(price, st.tick),
                st.tick * (1 + int((1.0 - liquidity(st.contract, spots[st.contract.underlying])) * 3)),
            )
            for (token, st), price in zip(items, prices, strict=True)
        }

    def make_frame(self, n_ticks: int, now: datetime | None = None) -> list[Tick]:
        """One frame of ``n_ticks`` ticks for subscribed contracts, chosen by how liquid they are
        (expired ones never: an empty frame when nothing subscribed trades)."""
        now = now or clock.now()
        if not self._subs:
            return []
        rng = self.rng
        tokens, cumulative = self._chooser(now)
        if not cumulative[-1]:
            return []  # every subscribed contract has expired
        stamp = now.replace(microsecond=0)
        # one instant per frame: each underlying's spot, and each contract's price and spread, once.
        # First the draws (which contract, how much), then the prices of all the frame's contracts
        # at once (the Black-76 library's cost is per call), then the ticks.
        spots: dict[Underlying, float] = {}
        live: dict[str, _State] = {}
        expired: set[str] = set()
        drawn: list[tuple[str, int, int, int | None, int, int]] = []  # token, qty, volume, oi, bid/ask qty
        for _ in range(n_ticks):
            token = tokens[min(bisect.bisect(cumulative, rng.random() * cumulative[-1]), len(tokens) - 1)]
            st = self._state(token, now)
            contract = st.contract
            if token not in live and token not in expired:
                if not trading(contract, now):
                    expired.add(token)
                else:
                    live[token] = st
                    if contract.underlying not in spots:
                        spots[contract.underlying] = self.spot(contract.underlying, now)
            if token in expired:
                continue
            if contract.kind == "INDEX":
                drawn.append((token, 0, 0, None, 0, 0))
                continue
            lot = contract.lot
            qty = trade_unit(contract) * rng.choice(TRADE_SIZES)
            st.volume += qty
            if st.oi is not None:
                st.oi = max(lot, st.oi + lot * rng.choice((-2, -1, 0, 0, 1, 2, 3)))
            drawn.append((token, qty, st.volume, st.oi, lot * rng.randint(1, 200), lot * rng.randint(1, 200)))
        quotes = self._quotes(live, spots, now)
        frame = []
        for token, qty, volume, oi, bid_qty, ask_qty in drawn:
            st = live[token]
            price, spread = quotes[token]
            if st.contract.kind == "INDEX":
                frame.append(Tick(st.instrument_id, stamp, now, price))
                continue
            st.turnover += qty * price
            frame.append(
                Tick(
                    instrument_id=st.instrument_id,
                    exchange_ts=stamp,
                    received_ts=now,
                    last_price=price,
                    last_quantity=qty,
                    volume=volume,
                    average_price=round(st.turnover / volume, 2),
                    open_interest=oi,
                    bid_price=round(max(st.tick, price - spread), 2),
                    bid_quantity=bid_qty,
                    ask_price=round(price + spread, 2),
                    ask_quantity=ask_qty,
                )
            )
        return frame

    async def run(self, sink: FeedSink) -> None:
        """Frames of ~50 ms at the configured rate, busier in the first 15 minutes after the open."""
        self.state = FeedState.CONNECTED
        self._sink = sink
        await sink.on_event(FeedEvent(FeedState.CONNECTED, clock.now(), frozenset(self._subs.values())))
        interval = 0.05
        carry = 0.0
        try:
            while True:
                await self.paused.wait()
                now = clock.now()
                local = now.astimezone(IST).time()
                burst = 3.0 if SESSION_OPEN <= local < BURST_UNTIL else 1.0
                carry += self.rate * burst * interval
                n, carry = int(carry), carry - int(carry)
                if n and self._subs:
                    await sink.on_ticks(self.make_frame(n, now))
                await asyncio.sleep(interval)
        finally:
            self.state = FeedState.STOPPED
            self._sink = None
            await sink.on_event(FeedEvent(FeedState.STOPPED, clock.now(), frozenset(self._subs.values())))
