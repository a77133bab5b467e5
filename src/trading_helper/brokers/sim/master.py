"""``sim_instruments(count)``: the first ``count`` contracts NSE lists today, most traded first.

The order (so a small demo still shows every kind): the two indices, their near-month futures,
each stock with its near-month future, then option chains grown outward from the money strike by
strike (call and put of each): NIFTY's nearest weekly and BANKNIFTY's monthly first, then NIFTY's
next weekly and monthly and the stocks' monthly chains, then every chain wider and the later
expiries and futures. Strikes are on NSE's steps around the spot at today's open, within
:data:`WIDTH` of it, as the exchange lists them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

from trading_helper import clock
from trading_helper.brokers.sim.contracts import (
    BY_NAME,
    UNDERLYINGS,
    Contract,
    Underlying,
    instrument,
    monthly_expiries,
    weekly_expiries,
)
from trading_helper.brokers.sim.market import previous_close
from trading_helper.models import Instrument
from trading_helper.timeframes import IST

#: strikes listed up to this share of the spot away from it (NSE lists about this wide)
WIDTH = 0.3


class _Chain:
    """One expiry's options of one underlying, handed out ring by ring around the money."""

    def __init__(self, u: Underlying, expiry: date, weekly: bool, today: date) -> None:
        self.u, self.expiry, self.weekly = u, expiry, weekly
        spot = previous_close(u, today)
        self.step = u.step(spot)
        self.atm = round(spot / self.step) * self.step
        self.rings = int(spot * WIDTH / self.step)
        self.next_ring = 0

    def ring(self) -> list[Contract]:
        """The next ring's contracts (the ATM strike first, then one step further each side)."""
        r, self.next_ring = self.next_ring, self.next_ring + 1
        if r > self.rings:
            return []
        strikes = [self.atm] if r == 0 else [self.atm + r * self.step, self.atm - r * self.step]
        return [
            Contract(self.u, kind, self.expiry, round(s, 2), self.weekly)
            for s in strikes
            if s > 0
            for kind in ("CE", "PE")
        ]


def _contracts(today: date) -> Iterator[Contract]:
    monthly = monthly_expiries(today, 3)
    weekly = [e for e in weekly_expiries(today, 6) if e not in monthly]
    nifty, bank = BY_NAME["NIFTY"], BY_NAME["BANKNIFTY"]
    stocks = [u for u in UNDERLYINGS if not u.index]
    yield Contract(nifty, "INDEX")
    yield Contract(bank, "INDEX")
    yield Contract(nifty, "FUT", monthly[0])
    yield Contract(bank, "FUT", monthly[0])
    for u in stocks:
        yield Contract(u, "EQ")
        yield Contract(u, "FUT", monthly[0])
    # NIFTY's expiries in time order: the weeklies and the monthly ones (which use the monthly symbol)
    nifty_expiries = sorted({*weekly, *monthly})
    nifty_chains = [_Chain(nifty, e, e not in monthly, today) for e in nifty_expiries]
    bank_chains = [_Chain(bank, e, False, today) for e in monthly]
    stock_chains = [[_Chain(u, e, False, today) for e in monthly] for u in stocks]
    phases: list[tuple[list[_Chain], int]] = [
        ([nifty_chains[0], bank_chains[0]], 21),
        ([*nifty_chains[1:3], *(c[0] for c in stock_chains)], 6),
    ]
    everything = [*nifty_chains, *bank_chains, *(c for chains in stock_chains for c in chains)]
    for chains, until in phases:
        for _ in range(until):
            for chain in chains:
                if chain.next_ring < until:
                    yield from chain.ring()
    for u in (nifty, bank, *stocks):
        for expiry in monthly[1:]:
            yield Contract(u, "FUT", expiry)
    while any(c.next_ring <= c.rings for c in everything):
        for chain in everything:
            yield from chain.ring()


def listing_capacity(today: date) -> int:
    return sum(1 for _ in _contracts(today))


def sim_instruments(count: int, today: date | None = None) -> list[Instrument]:
    """The first ``count`` instruments of the simulated master on ``today`` (IST date)."""
    today = today or clock.now().astimezone(IST).date()
    out: list[Instrument] = []
    for contract in _contracts(today):
        if len(out) == count:
            break
        out.append(instrument(contract))
    if len(out) < count:
        raise ValueError(f"the simulator lists {len(out)} instruments on {today}, not {count}")
    return out
