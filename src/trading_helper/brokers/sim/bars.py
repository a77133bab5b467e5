"""The simulator's broker history: 1m bars of any contract on any NSE session, reproducible.

A contract's bar follows its underlying's bar (:func:`.market.underlying_minutes`): the open at the
minute's start, the close at its end, high and low at the underlying's high and low (every
contract's price moves one way with its underlying: up for cash, futures and calls, down for puts).
Volume and open interest are seeded walks: none for indices (as Kite's index history), lots for
derivatives, open interest only on futures and options. No bars on weekends and holidays, none
after a contract expired.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

from trading_helper.brokers.sim.contracts import Contract, next_trading_day
from trading_helper.brokers.sim.market import (
    MINUTE,
    day_open,
    fair_prices,
    liquidity,
    minute_volume,
    on_tick,
    open_interest_base,
    seed,
    trading,
    underlying_minutes,
)
from trading_helper.models import Candle
from trading_helper.timeframes import IST, Timeframe


@dataclass(frozen=True, slots=True)
class Minute:
    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    oi: int | None


@lru_cache(maxsize=4096)
def contract_minutes(contract: Contract, day: date) -> tuple[Minute, ...]:
    """The contract's 1m bars of the session of ``day``."""
    u = contract.underlying
    bars = underlying_minutes(u, day)
    if not bars:
        return ()
    rng = random.Random(seed("flow", contract, day))
    tick = contract.tick
    falls = contract.kind == "PE"
    spot0 = day_open(u, day)
    # open interest moves from the day's base toward the next session's (plus a walk of trades),
    # so the next day starts where this one ended
    oi_start = open_interest_base(contract, spot0, day)
    later = next_trading_day(day)
    oi_end = open_interest_base(contract, day_open(u, later), later)
    walk = 0
    lot = contract.lot
    active = liquidity(contract, spot0)
    out = []
    if not trading(contract, bars[0].time):
        return ()
    live = list(itertools.takewhile(lambda bar: trading(contract, bar.time + MINUTE), bars))
    # every minute's close, high and low, and the first open, priced in one call
    prices = [
        on_tick(p, tick)
        for p in fair_prices(
            [(contract, bars[0].open, bars[0].time)]
            + [
                q
                for bar in live
                for q in (
                    (contract, bar.close, bar.time + MINUTE),
                    (contract, bar.low if falls else bar.high, bar.time),
                    (contract, bar.high if falls else bar.low, bar.time),
                )
            ]
        )
    ]
    before: Minute | None = None
    for i, bar in enumerate(live):
        # a minute opens where the one before closed (the same spot at the same instant)
        o = before.close if before is not None else prices[0]
        c, hi, lo = prices[1 + 3 * i : 4 + 3 * i]
        if u.index and not contract.derivative:
            volume = 0
        else:
            busy = 1.0 + 2.0 * (0.9**i) + 0.97 ** (len(bars) - i)  # busier after the open, before the close
            volume = minute_volume(contract, rng, busy, active)
        oi = None
        if oi_start is not None and oi_end is not None:
            walk += lot * rng.choice((-20, -10, 0, 0, 10, 20))
            oi = max(lot, oi_start + round((oi_end - oi_start) * (i + 1) / len(bars) / lot) * lot + walk)
        before = Minute(bar.time, o, max(hi, o, c), min(lo, o, c), c, volume, oi)
        out.append(before)
    return tuple(out)


def history(contract: Contract, timeframe: Timeframe, start: datetime, end: datetime) -> list[Candle]:
    """Candles for every bucket of [start, end) inside NSE sessions: the 1m bars aggregated to the
    timeframe (so timeframes agree)."""
    out: list[Candle] = []
    day = start.astimezone(IST).date()
    while day <= end.astimezone(IST).date():
        groups: dict[datetime, list[Minute]] = {}
        for minute in contract_minutes(contract, day):
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
