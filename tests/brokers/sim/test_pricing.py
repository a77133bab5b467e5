"""The simulator's option prices recover the smile they were priced from: the IV solved from each
price (the option chain's solver, options/black76.py, and QuantLib's as an independent one) equals the smile's IV within 1e-4
wherever the exchange's 0.05 price step allows it; futures trade at the forward S e^{rT}."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

import QuantLib as ql

from trading_helper.brokers.sim import SimFeed, sim_instruments
from trading_helper.brokers.sim.bars import contract_minutes
from trading_helper.brokers.sim.contracts import decode_token
from trading_helper.brokers.sim.market import underlying_minutes
from trading_helper.brokers.sim.pricing import RATE, black76_price, forward, smile_iv, years_to_expiry
from trading_helper.config import Settings
from trading_helper.models import Tick
from trading_helper.options import black76
from trading_helper.timeframes import IST

TODAY = date(2026, 11, 26)  # a Thursday session: the next NIFTY weekly is Tuesday 12-01
NOW = datetime(2026, 11, 26, 11, 7, 30, tzinfo=IST)
HALF_TICK = 0.025


def chain_iv(flag: str, price: float, fwd: float, strike: float, years: float) -> float:
    """The implied volatility the option chain solves from ``price`` (options/black76.py)."""
    solved = black76.implied_vol(price, fwd, strike, years, RATE, "c" if flag == "CE" else "p")
    assert solved.reason == [None], solved.reason
    return float(solved.iv)


def quantlib_iv(flag: str, price: float, fwd: float, strike: float, years: float) -> float:
    kind = ql.Option.Call if flag == "CE" else ql.Option.Put
    discount = math.exp(-RATE * years)
    return float(
        ql.blackFormulaImpliedStdDev(kind, strike, fwd, price, discount, 0.0, 0.2, 1e-12, 1000)
    ) / math.sqrt(years)


def quantlib_price(flag: str, fwd: float, strike: float, years: float, sigma: float) -> float:
    kind = ql.Option.Call if flag == "CE" else ql.Option.Put
    return float(ql.blackFormula(kind, strike, fwd, sigma * math.sqrt(years), math.exp(-RATE * years)))


def vega(flag: str, fwd: float, strike: float, years: float, sigma: float) -> float:
    """The price change for a unit of volatility (QuantLib's Black formula, central difference)."""
    up, down = (quantlib_price(flag, fwd, strike, years, sigma + d) for d in (1e-4, -1e-4))
    return (up - down) / 2e-4


def test_the_price_function_is_black_76_as_quantlib_computes_it() -> None:
    for fwd, strike, years, sigma in [
        (25_000, 24_000, 0.01, 0.15),
        (53_100, 55_000, 0.08, 0.2),
        (1450, 1400, 0.2, 0.3),
    ]:
        for flag in ("CE", "PE"):
            ours = black76_price(flag, fwd, strike, years, sigma)
            ref = quantlib_price(flag, fwd, strike, years, sigma)
            assert abs(ours - ref) < 1e-8 * max(1.0, ref)


async def frame_of_a_chain() -> tuple[SimFeed, dict[int, str], list[Tick]]:
    items = sim_instruments(200, TODAY)
    tokens = {inst.broker_ids["sim"]: n for n, inst in enumerate(items, 1)}
    feed = SimFeed(Settings())
    await feed.subscribe(tokens)
    frame = feed.make_frame(20_000, NOW)
    return feed, {n: t for t, n in tokens.items()}, frame


async def test_option_ticks_recover_the_smile_iv_and_futures_trade_at_the_forward() -> None:
    feed, token_of, frame = await frame_of_a_chain()
    latest = {t.instrument_id: t for t in frame}
    checked_tight = checked = 0
    futures = 0
    for iid, tick in latest.items():
        contract = decode_token(token_of[iid])
        assert contract is not None
        if contract.expiry is None:
            continue
        spot = feed.spot(contract.underlying, NOW)  # the same instant: the frame's spot
        years = years_to_expiry(contract.expiry, NOW)
        fwd = forward(spot, years)
        if contract.kind == "FUT":
            assert abs(tick.last_price - spot * math.exp(RATE * years)) <= HALF_TICK + 1e-9
            futures += 1
            continue
        assert contract.strike is not None
        flag = contract.kind
        sigma = smile_iv(contract.underlying.atm_iv, contract.strike, fwd)
        fair = black76_price(flag, fwd, contract.strike, years, sigma)
        if fair < 0.05:
            assert tick.last_price == 0.05  # the smallest price a contract can have
            continue
        for solved in (
            chain_iv(flag, tick.last_price, fwd, contract.strike, years),
            quantlib_iv(flag, tick.last_price, fwd, contract.strike, years),
        ):
            # rounding to the 0.05 step moves the price by up to half a step: priced at the solved
            # IV, the option is within half a step of its price at the smile's IV
            assert abs(quantlib_price(flag, fwd, contract.strike, years, solved) - fair) <= HALF_TICK + 1e-9
            if HALF_TICK / vega(flag, fwd, contract.strike, years, sigma) <= 5e-5:  # the step hides < 5e-5
                assert abs(solved - sigma) <= 1e-4, (contract, solved, sigma)
                checked_tight += 1
            checked += 1
    assert futures >= 20 and checked >= 200 and checked_tight >= 40, (futures, checked, checked_tight)


def test_the_smile_has_the_index_skew() -> None:
    nifty = decode_token("100001")
    assert nifty is not None
    atm = nifty.underlying.atm_iv
    assert smile_iv(atm, 25_000, 25_000) == atm
    for distance in (0.02, 0.05, 0.1):
        below, above = (
            smile_iv(atm, 25_000 * (1 - distance), 25_000),
            smile_iv(atm, 25_000 * (1 + distance), 25_000),
        )
        assert below > atm and below > above  # puts below the forward dearer than calls above it


def test_history_bars_recover_the_smile_iv_too() -> None:
    """A broker history bar closes at the option's price with its underlying at the bar's close."""
    items = [i for i in sim_instruments(200, TODAY) if i.option_type and i.name == "NIFTY"][:12]
    assert len(items) == 12
    tight = 0
    for inst in items:
        contract = decode_token(inst.broker_ids["sim"])
        assert contract is not None and contract.strike is not None and contract.kind in ("CE", "PE")
        under = underlying_minutes(contract.underlying, TODAY)
        bars = contract_minutes(contract, TODAY)
        assert len(bars) == len(under) == 375
        for bar, spot in zip(bars[::15], under[::15], strict=True):
            end = bar.time + timedelta(minutes=1)
            years = years_to_expiry(contract.expiry, end)
            fwd = forward(spot.close, years)
            sigma = smile_iv(contract.underlying.atm_iv, contract.strike, fwd)
            flag = contract.kind
            solved = chain_iv(flag, bar.close, fwd, contract.strike, years)
            assert (
                abs(
                    quantlib_price(flag, fwd, contract.strike, years, solved)
                    - quantlib_price(flag, fwd, contract.strike, years, sigma)
                )
                <= HALF_TICK + 1e-9
            )
            if HALF_TICK / vega(flag, fwd, contract.strike, years, sigma) <= 5e-5:
                assert abs(solved - sigma) <= 1e-4
                tight += 1
    assert tight >= 100
