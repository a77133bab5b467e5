"""The simulator's market: where each underlying stands at any instant, and what its contracts are worth.

Each underlying follows one seeded, reproducible walk, the same in history and in the live feed:

* **Closes**: one per NSE session (the exchange calendar: no bars on weekends or holidays), a
  mean-reverting walk of the log level around the underlying's level (so NIFTY stays near 25,000,
  BANKNIFTY near 53,000), started at :data:`ANCHOR` and computed session by session.
* **Opens**: near the previous close (an overnight gap of a fraction of the daily volatility).
* **Minutes**: a Brownian bridge from the open to the close over the session's minutes (its
  hours from the calendar: Muhurat sessions are short), so the day's path ends where the close says.

A contract's price follows from its underlying's (:mod:`.pricing`): futures at the forward,
options by Black-76 on the forward at the smile's volatility; indices have no volume, only
futures and options have open interest.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Final

from trading_helper.brokers.sim.contracts import (
    Contract,
    Underlying,
    is_trading_day,
    previous_trading_day,
    session_hours,
    trading_days,
)
from trading_helper.brokers.sim.pricing import expires_at, model_prices, years_to_expiry
from trading_helper.timeframes import IST

#: the walk starts here, at the underlying's level
ANCHOR: Final = date(2024, 1, 1)
#: the share of the distance to the level closed each session (a stationary spread of ~2 % for NIFTY)
MEAN_REVERSION: Final = 0.07
#: the overnight gap's standard deviation, as a share of the daily volatility
GAP_SHARE: Final = 0.3
MINUTE: Final = timedelta(minutes=1)
LISTED_WEEKLY, LISTED_MONTHLY = timedelta(weeks=8), timedelta(weeks=13)


def seed(*parts: object) -> int:
    """A stable 64-bit seed from ``parts`` (``hash()`` changes between processes)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def adhoc_underlying(token: str) -> Underlying:
    """A stock of its own for a token the simulator never listed (tests map their own)."""
    return Underlying(-1, token, token, 50.0 + seed("price", token) % 5000, 0.015, 0.24, 1)


@lru_cache(maxsize=256)
def _closes(u: Underlying, year: int) -> dict[date, float]:
    """Every session close from :data:`ANCHOR` to the end of ``year``."""
    out: dict[date, float] = {}
    x = 0.0  # log of close / level
    for y in range(ANCHOR.year, year + 1):
        for day in trading_days(y):
            if day < ANCHOR:
                continue
            x = x * (1 - MEAN_REVERSION) + random.Random(seed("close", u, day)).gauss(0.0, u.daily_vol)
            out[day] = u.level * math.exp(x)
    return out


def day_close(u: Underlying, day: date) -> float:
    """The close of the last session on or before ``day``."""
    day = previous_trading_day(day)
    if day < ANCHOR:
        return u.level
    return _closes(u, day.year)[day]


def previous_close(u: Underlying, day: date) -> float:
    return day_close(u, day - timedelta(days=1))


def day_open(u: Underlying, day: date) -> float:
    """A session's open: the previous close moved by a small overnight gap."""
    gap = random.Random(seed("gap", u, day)).gauss(0.0, u.daily_vol * GAP_SHARE)
    return previous_close(u, day) * math.exp(gap)


@dataclass(frozen=True, slots=True)
class Bar:
    time: datetime
    open: float
    high: float
    low: float
    close: float


@lru_cache(maxsize=1024)
def underlying_minutes(u: Underlying, day: date) -> tuple[Bar, ...]:
    """The underlying's 1m bars of the session of ``day`` (none on a non-trading day)."""
    hours = session_hours(day)
    if hours is None:
        return ()
    start, end = hours
    n = int((end - start) / MINUTE)
    rng = random.Random(seed("minutes", u, day))
    sigma = u.daily_vol / math.sqrt(n)
    walk = [0.0]
    for _ in range(n):
        walk.append(walk[-1] + rng.gauss(0.0, sigma))
    first, last = math.log(day_open(u, day)), math.log(day_close(u, day))
    path = [math.exp(first + w - i / n * (walk[-1] - (last - first))) for i, w in enumerate(walk)]
    bars = []
    for i in range(n):
        o, c = path[i], path[i + 1]
        reach = abs(rng.gauss(0.0, sigma * 0.5))
        bars.append(Bar(start + i * MINUTE, o, max(o, c) * math.exp(reach), min(o, c) * math.exp(-reach), c))
    return tuple(bars)


def spot_at(u: Underlying, now: datetime) -> float:
    """Where the underlying stands at ``now``: inside a session on its minute path, else the last close."""
    day = now.astimezone(IST).date()
    if not is_trading_day(day):
        return day_close(u, day)
    bars = underlying_minutes(u, day)
    if now < bars[0].time:
        return previous_close(u, day)
    i = int((now - bars[0].time) / MINUTE)
    if i >= len(bars):
        return bars[-1].close
    bar = bars[i]
    share = (now - bar.time) / MINUTE
    return bar.open + (bar.close - bar.open) * share


def fair_prices(quotes: Sequence[tuple[Contract, float, datetime]]) -> list[float]:
    """Model prices (unrounded) of (contract, its underlying's spot, instant) triples: cash and
    indices at the spot, futures and options by :func:`.pricing.model_prices`, all in one call."""
    out = [spot for _, spot, _ in quotes]
    at: list[int] = []
    kinds, spots, strikes, years, atm_ivs = [], [], [], [], []
    for n, (contract, spot, now) in enumerate(quotes):
        if contract.expiry is not None:
            at.append(n)
            kinds.append(contract.kind)
            spots.append(spot)
            strikes.append(contract.strike or 0.0)
            years.append(years_to_expiry(contract.expiry, now))
            atm_ivs.append(contract.underlying.atm_iv)
    if at:
        for n, price in zip(at, model_prices(kinds, spots, strikes, years, atm_ivs).tolist(), strict=True):
            out[n] = price
    return out


def fair_price(contract: Contract, spot: float, now: datetime) -> float:
    """A contract's model price with its underlying at ``spot`` (unrounded)."""
    return fair_prices([(contract, spot, now)])[0]


def on_tick(price: float, tick: float = 0.05) -> float:
    """``price`` on the exchange's price grid (at least one tick)."""
    return max(tick, round(round(price / tick) * tick, 2))


def listed_on(contract: Contract) -> date | None:
    """The day a derivative is listed: a weekly 8 weeks, a monthly 13 weeks before its expiry
    (about as NSE lists them); None for cash and indices."""
    if contract.expiry is None:
        return None
    return contract.expiry - (LISTED_WEEKLY if contract.weekly else LISTED_MONTHLY)


def trading(contract: Contract, now: datetime) -> bool:
    """False before a derivative is listed and once it has expired."""
    listed = listed_on(contract)
    if listed is None or contract.expiry is None:
        return True
    return listed <= now.astimezone(IST).date() and now < expires_at(contract.expiry)


def liquidity(contract: Contract, spot: float) -> float:
    """How actively a contract trades, 1 at the money (futures, cash and indices too), falling off
    with the strike's distance from the spot (a far option trades rarely)."""
    if contract.strike is None:
        return 1.0
    k = math.log(contract.strike / spot) / max(contract.underlying.daily_vol * 4, 1e-6)
    return max(0.02, math.exp(-k * k))


#: a trade's size in units of :func:`trade_unit` (mean 6), and about how many trades a liquid
#: contract's minute has (the live feed's ticks of a busy contract, ~2 a second at the defaults)
TRADE_SIZES: Final = (1, 1, 2, 3, 5, 10, 20)
TRADES_PER_MINUTE: Final = 120


def trade_unit(contract: Contract) -> int:
    """What a trade's size is counted in: a lot for a derivative, a block of shares worth about
    20,000 rupees for a stock (so history and live ticks trade on the same scale)."""
    if contract.derivative:
        return contract.lot
    return max(1, round(20_000 / contract.underlying.level))


def minute_volume(contract: Contract, rng: random.Random, busy: float, active: float) -> int:
    """One minute's volume in history: about what the live feed's trades add up to in a minute."""
    mean = sum(TRADE_SIZES) / len(TRADE_SIZES) * TRADES_PER_MINUTE
    return trade_unit(contract) * max(1, int(rng.uniform(0.5, 1.5) * busy * active * mean))


def open_interest_base(contract: Contract, spot: float, day: date) -> int | None:
    """The open interest a derivative starts ``day`` with; None for cash and indices. It builds up
    from the listing (more near the money, most on futures) and moves a few per cent a day, so a
    day starts near where the one before ended."""
    listed = listed_on(contract)
    if listed is None:
        return None
    lots = 2_000 + seed("oi", contract) % 3_000
    scale = 20.0 if contract.kind == "FUT" else 1.0 + 30.0 * liquidity(contract, spot)
    ramp = 1.0 - math.exp(-(max((day - listed).days, 0) + 1) / 15)
    noise = 1.0 + 0.03 * random.Random(seed("oi", contract, day)).gauss(0.0, 1.0)
    return max(1, int(lots * scale * ramp * noise)) * contract.lot
