"""The simulator broker (``BROKER=sim``): a synthetic market for N instruments.

Prices random-walk on each instrument's tick size, cumulative day volume and open interest
grow, bid/ask sit around the price, and activity bursts in the first minutes after the open.
History is deterministic (a seeded walk per instrument and bucket), so backfills are
reproducible. Ticks reach the :class:`FeedSink` frame by frame, like a real broker's feed.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import ClassVar

from trading_helper import clock
from trading_helper.brokers.base import Broker, FeedEvent, FeedSink, FeedState, LiveFeed
from trading_helper.config import Settings
from trading_helper.models import Candle, Instrument, Tick
from trading_helper.timeframes import IST, Timeframe

_UNDERLYINGS = [
    "RELIANCE",
    "TCS",
    "HDFCBANK",
    "INFY",
    "ICICIBANK",
    "SBIN",
    "ITC",
    "LT",
    "AXISBANK",
    "KOTAKBANK",
    "BHARTIARTL",
    "HINDUNILVR",
    "BAJFINANCE",
    "MARUTI",
    "TATAMOTORS",
    "SUNPHARMA",
    "WIPRO",
    "ONGC",
    "NTPC",
    "POWERGRID",
]
SESSION_OPEN, SESSION_CLOSE = time(9, 15), time(15, 30)


def sim_instruments(count: int, today: date | None = None) -> list[Instrument]:
    """``count`` instruments: NIFTY/BANKNIFTY index, stocks, stock futures and NIFTY options."""
    today = today or clock.now().astimezone(IST).date()
    expiry = today + timedelta(days=(3 - today.weekday()) % 7 or 7)  # next Thursday
    out: list[Instrument] = [
        Instrument(
            exchange="NSE",
            tradingsymbol="NIFTY 50",
            name="NIFTY",
            segment="INDICES",
            instrument_type="INDEX",
            tick_size=0.05,
        ),
        Instrument(
            exchange="NSE",
            tradingsymbol="NIFTY BANK",
            name="BANKNIFTY",
            segment="INDICES",
            instrument_type="INDEX",
            tick_size=0.05,
        ),
    ]
    for name in _UNDERLYINGS:
        out.append(
            Instrument(exchange="NSE", tradingsymbol=name, name=name, segment="NSE", instrument_type="EQ")
        )
        out.append(
            Instrument(
                exchange="NFO",
                tradingsymbol=f"{name}{expiry:%y%b}FUT".upper(),
                name=name,
                segment="NFO-FUT",
                instrument_type="FUT",
                expiry=expiry,
                lot_size=250,
            )
        )
    strike = 24_000
    while len(out) < count:
        for opt in ("CE", "PE"):
            out.append(
                Instrument(
                    exchange="NFO",
                    tradingsymbol=f"NIFTY{expiry:%y%b}{strike}{opt}".upper(),
                    name="NIFTY",
                    segment="NFO-OPT",
                    instrument_type=opt,
                    expiry=expiry,
                    strike=float(strike),
                    option_type=opt,
                    lot_size=75,
                )
            )
        strike += 50
    out = out[:count]
    for n, inst in enumerate(out):
        inst.broker_ids["sim"] = str(100_001 + n)
    return out


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def base_price(token: str) -> float:
    return 50.0 + _seed("price", token) % 5000


def day_level(token: str, day: date) -> float:
    """The price an instrument trades around on ``day`` (history and the live feed agree)."""
    return round(base_price(token) + (_seed(token, day.toordinal()) % 200 - 100) / 10, 2)


@dataclass(slots=True, frozen=True)
class _Minute:
    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    oi: int


@lru_cache(maxsize=4096)
def session_minutes(token: str, day: date) -> tuple[_Minute, ...]:
    """The simulated 1m candles of one NSE session (09:15-15:30 IST): a seeded random walk."""
    rng = random.Random(_seed("walk", token, day.toordinal()))
    price = day_level(token, day)
    tick = 0.05
    oi = 1000 * (1 + _seed("oi", token) % 500)
    t = datetime.combine(day, SESSION_OPEN, tzinfo=IST)
    close_at = datetime.combine(day, SESSION_CLOSE, tzinfo=IST)
    out = []
    while t < close_at:
        o = price
        steps = [rng.choice((-2, -1, -1, 0, 1, 1, 2)) for _ in range(6)]
        path = [o]
        for step in steps:
            path.append(max(tick, round((path[-1] + step * tick) / tick) * tick))
        price = round(path[-1], 2)
        oi = max(0, oi + rng.choice((-150, -75, 0, 0, 75, 150)))
        out.append(
            _Minute(
                t, round(o, 2), round(max(path), 2), round(min(path), 2), price, rng.randint(50, 5000), oi
            )
        )
        t += timedelta(minutes=1)
    return tuple(out)


def price_at(token: str, now: datetime) -> float:
    """Where the simulated history stands at ``now``: live ticks continue from there."""
    local = now.astimezone(IST)
    if local.weekday() >= 5 or local.time() < SESSION_OPEN:
        return day_level(token, local.date())
    minutes = [m for m in session_minutes(token, local.date()) if m.time <= now]
    return minutes[-1].close if minutes else day_level(token, local.date())


@dataclass(slots=True)
class _State:
    instrument_id: int
    price: float
    tick_size: float
    volume: int
    oi: int | None
    day: date


class SimFeed(LiveFeed):
    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self.rate = settings.SIM_TICKS_PER_SECOND
        self.rng = rng or random.Random(7)
        self._subs: dict[str, int] = {}
        self._states: dict[str, _State] = {}
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
        if new and self._sink is not None:  # capture of these starts now, like a real feed reports
            await self._sink.on_event(FeedEvent(FeedState.CONNECTED, clock.now(), new, "subscribed"))

    async def unsubscribe(self, tokens: Iterable[str]) -> None:
        tokens = list(tokens)
        gone = frozenset(i for t in tokens if (i := self._subs.pop(t, None)) is not None)
        for token in tokens:
            self._states.pop(token, None)
        if gone and self._sink is not None:
            await self._sink.on_event(FeedEvent(FeedState.STOPPED, clock.now(), gone, "unsubscribed"))

    def _state(self, token: str, now: datetime) -> _State:
        st = self._states.get(token)
        day = now.astimezone(IST).date()
        if st is None:
            derivative = _seed("deriv", token) % 3 != 0
            st = self._states[token] = _State(
                self._subs[token],
                price_at(token, now),
                0.05,
                0,
                1000 * (1 + _seed("oi", token) % 500) if derivative else None,
                day,
            )
        if st.day != day:
            st.volume, st.day = 0, day
        return st

    def make_frame(self, n_ticks: int, now: datetime | None = None) -> list[Tick]:
        """One frame of ``n_ticks`` ticks for random subscribed instruments."""
        now = now or clock.now()
        rng, tokens = self.rng, list(self._subs)
        if not tokens:
            return []
        frame = []
        for token in rng.choices(tokens, k=n_ticks):
            st = self._state(token, now)
            st.price = max(
                st.tick_size,
                round((st.price + st.tick_size * rng.choice((-2, -1, 0, 1, 2))) / st.tick_size)
                * st.tick_size,
            )
            qty = rng.choice((1, 5, 10, 25, 50, 75, 100, 250, 500))
            st.volume += qty
            if st.oi is not None:
                st.oi = max(0, st.oi + rng.choice((-75, 0, 0, 75, 150)))
            spread = st.tick_size * rng.choice((1, 1, 2, 3))
            frame.append(
                Tick(
                    instrument_id=st.instrument_id,
                    exchange_ts=now.replace(microsecond=0),
                    received_ts=now,
                    last_price=round(st.price, 2),
                    last_quantity=qty,
                    volume=st.volume,
                    average_price=round(st.price, 2),
                    open_interest=st.oi,
                    bid_price=round(st.price - spread, 2),
                    bid_quantity=rng.randint(1, 5000),
                    ask_price=round(st.price + spread, 2),
                    ask_quantity=rng.randint(1, 5000),
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
                burst = 3.0 if SESSION_OPEN <= local < time(9, 30) else 1.0
                carry += self.rate * burst * interval
                n, carry = int(carry), carry - int(carry)
                if n and self._subs:
                    await sink.on_ticks(self.make_frame(n, now))
                await asyncio.sleep(interval)
        finally:
            self.state = FeedState.STOPPED
            self._sink = None
            await sink.on_event(FeedEvent(FeedState.STOPPED, clock.now(), frozenset(self._subs.values())))


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
        """Candles for every bucket of [start, end) inside NSE sessions (weekdays): one seeded random
        walk of 1m candles per instrument and day, aggregated to the timeframe (so timeframes agree)."""
        self.history_calls += 1
        out: list[Candle] = []
        day = start.astimezone(IST).date()
        while day <= end.astimezone(IST).date():
            if day.weekday() < 5:
                groups: dict[datetime, list[_Minute]] = {}
                for minute in session_minutes(broker_token, day):
                    groups.setdefault(timeframe.bucket_start(minute.time), []).append(minute)
                for bucket, ms in groups.items():
                    if start <= bucket < end:
                        out.append(
                            Candle(
                                bucket,
                                ms[0].open,
                                max(m.high for m in ms),
                                min(m.low for m in ms),
                                ms[-1].close,
                                sum(m.volume for m in ms),
                                ms[-1].oi,
                                "broker",
                                timeframe=timeframe,
                            )
                        )
            day += timedelta(days=1)
        return out

    def live_feed(self) -> SimFeed:
        return self._feed
