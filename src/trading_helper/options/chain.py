"""One option chain (an underlying and an expiry) computed from quotes: pure, no I/O.

``compute_chain`` takes what the live source (``options/live.py``) or a test gathers: the option
contracts with their latest quotes, the underlying's and the future's last prices, and optionally
the same contracts' quotes at the start of the window (for OI change and build-up). Its answer is
the API's chain document (``GET /api/options/chain``), stored as it is by the minute snapshots
(``options/history.py``) so that a past minute's chain reads back exactly as it was computed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final

import numpy as np

from trading_helper.options import analytics, black76
from trading_helper.options.expiry import years_to_expiry
from trading_helper.timeframes import IST

#: the fields of one side (ce or pe) of a strike, in order (the snapshot table's columns follow)
SIDE_FIELDS: Final = (
    "instrument",
    "instrument_id",
    "ltp",
    "bid",
    "ask",
    "iv_price",
    "oi",
    "oi_change",
    "volume",
    "iv",
    "iv_reason",
    "delta",
    "gamma",
    "theta",
    "vega",
    "buildup",
)


@dataclass(frozen=True, slots=True)
class OptionQuote:
    """One option contract and its latest quote (None where the quote lacks the field)."""

    instrument_id: int
    tradingsymbol: str
    strike: float
    option_type: str  # CE or PE
    ltp: float | None = None
    bid: float | None = None
    ask: float | None = None
    oi: int | None = None
    volume: int | None = None


@dataclass(frozen=True, slots=True)
class Baseline:
    """A contract's last price and OI at the start of the window the changes are measured over."""

    ltp: float | None
    oi: int | None


@dataclass(frozen=True, slots=True)
class FutureQuote:
    """The chain's future (same month or nearest) and its latest quote."""

    instrument_id: int
    tradingsymbol: str
    ltp: float | None = None
    oi: int | None = None


@dataclass(frozen=True, slots=True)
class ChainInputs:
    underlying: str  # EXCHANGE:SYMBOL of the index or stock
    exchange: str  # the options' exchange (NFO, BFO, MCX, CDS): it sets the expiry time
    expiry: date
    as_of: datetime
    rate: float
    quotes: Sequence[OptionQuote]
    spot: float | None = None
    future_price: float | None = None
    #: per contract (the future's id too), its price and OI at the window's start
    baseline: Mapping[int, Baseline] = field(default_factory=dict)
    future: FutureQuote | None = None


def iv_price(bid: float | None, ask: float | None, ltp: float | None) -> float | None:
    """The price an IV is solved from: the bid/ask mid when both exist, else the last price."""
    if bid is not None and ask is not None and bid > 0 and ask > 0 and ask >= bid:
        return (bid + ask) / 2
    if ltp is not None and ltp > 0:
        return ltp
    return None


def _nullable(values: np.ndarray) -> list[float | None]:
    """A float column as a list, NaN and infinities as None (JSON has neither)."""
    return [v if v - v == 0 else None for v in values.tolist()]  # v - v is NaN for both


def _change(now: float | None, then: float | None) -> float | None:
    return None if now is None or then is None else now - then


def compute_chain(inp: ChainInputs) -> dict[str, Any]:
    """The chain document: per strike (ascending) ``ce``/``pe`` with prices, OI, IV and Greeks,
    and the chain's forward, ATM strike, PCR by OI and by volume, max pain, ATM IV and straddle."""
    t = years_to_expiry(inp.exchange, inp.expiry, inp.as_of)
    quotes = sorted(inp.quotes, key=lambda q: (q.strike, q.option_type))
    prices = [iv_price(q.bid, q.ask, q.ltp) for q in quotes]
    calls = {q.strike: p for q, p in zip(quotes, prices, strict=True) if q.option_type == "CE"}
    puts = {q.strike: p for q, p in zip(quotes, prices, strict=True) if q.option_type == "PE"}
    strikes = sorted({q.strike for q in quotes})
    paired = [k for k in strikes if calls.get(k) is not None and puts.get(k) is not None]
    forward = analytics.parity_forward(
        paired, [calls[k] or 0.0 for k in paired], [puts[k] or 0.0 for k in paired], inp.rate, t
    )
    forward_source = "parity" if forward is not None else None
    if forward is None and inp.future_price is not None and inp.future_price > 0:
        forward, forward_source = inp.future_price, "future"

    flags = np.array(["c" if q.option_type == "CE" else "p" for q in quotes], dtype="<U1")
    strike_arr = np.array([q.strike for q in quotes], dtype=np.float64)
    f = math.nan if forward is None else forward
    price_arr = np.array([math.nan if p is None else p for p in prices], dtype=np.float64)
    solved = black76.implied_vol(price_arr, f, strike_arr, t, inp.rate, flags)
    g = black76.greeks(flags, f, strike_arr, t, inp.rate, solved.iv)

    rows: dict[float, dict[str, Any]] = {k: {"strike": k, "ce": None, "pe": None} for k in strikes}
    # columns as Python lists once (indexing NumPy arrays per element costs more than the maths)
    iv, delta, gamma, theta, vega = (_nullable(a) for a in (solved.iv, g.delta, g.gamma, g.theta, g.vega))
    for i, q in enumerate(quotes):
        base = inp.baseline.get(q.instrument_id)
        oi_change = None if base is None else _change(q.oi, base.oi)
        price_change = None if base is None else _change(q.ltp, base.ltp)
        rows[q.strike]["ce" if q.option_type == "CE" else "pe"] = {
            "instrument": q.tradingsymbol,
            "instrument_id": q.instrument_id,
            "ltp": q.ltp,
            "bid": q.bid,
            "ask": q.ask,
            "iv_price": prices[i],
            "oi": q.oi,
            "oi_change": None if oi_change is None else int(oi_change),
            "volume": q.volume,
            "iv": iv[i],
            "iv_reason": solved.reason[i],
            "delta": delta[i],
            "gamma": gamma[i],
            "theta": theta[i],
            "vega": vega[i],
            "buildup": analytics.buildup(price_change, oi_change),
        }
    doc = summarise(inp, t, forward, forward_source, list(rows.values()))
    doc["future"] = _future(inp)
    return doc


def _future(inp: ChainInputs) -> dict[str, Any] | None:
    """The future's quote and OI build-up over the window (price and OI against the baseline)."""
    f = inp.future
    if f is None:
        return None
    base = inp.baseline.get(f.instrument_id)
    oi_change = None if base is None else _change(f.oi, base.oi)
    price_change = None if base is None else _change(f.ltp, base.ltp)
    return {
        "instrument": f.tradingsymbol,
        "instrument_id": f.instrument_id,
        "ltp": f.ltp,
        "oi": f.oi,
        "oi_change": None if oi_change is None else int(oi_change),
        "buildup": analytics.buildup(price_change, oi_change),
    }


def smile(strikes: Sequence[Mapping[str, Any]], forward: float | None) -> list[dict[str, Any]]:
    """The IV smile: per strike the out-of-the-money side's IV (the call at and above the forward,
    the put below it), where solved."""
    out = []
    for row in strikes:
        side = row.get("ce") if forward is None or row["strike"] >= forward else row.get("pe")
        if side is not None and side.get("iv") is not None:
            out.append(
                {"strike": row["strike"], "iv": side["iv"], "side": "ce" if side is row.get("ce") else "pe"}
            )
    return out


def summarise(
    inp: ChainInputs,
    t: float,
    forward: float | None,
    forward_source: str | None,
    strikes: list[dict[str, Any]],
) -> dict[str, Any]:
    """The chain document of a list of strikes: the chain-level figures around them."""
    call_oi = [(s["ce"] or {}).get("oi") or 0 for s in strikes]
    put_oi = [(s["pe"] or {}).get("oi") or 0 for s in strikes]
    call_vol = sum((s["ce"] or {}).get("volume") or 0 for s in strikes)
    put_vol = sum((s["pe"] or {}).get("volume") or 0 for s in strikes)
    ks = [s["strike"] for s in strikes]
    atm = analytics.atm_strike(ks, forward if forward is not None else inp.spot)
    atm_row = next((s for s in strikes if s["strike"] == atm), {"ce": None, "pe": None})
    legs = [atm_row["ce"], atm_row["pe"]]
    atm_ivs = [leg["iv"] for leg in legs if leg is not None and leg["iv"] is not None]
    leg_prices = [leg["iv_price"] for leg in legs if leg is not None and leg["iv_price"] is not None]
    return {
        "underlying": inp.underlying,
        "expiry": inp.expiry.isoformat(),
        "as_of": inp.as_of.astimezone(IST).isoformat(),
        "spot": inp.spot,
        "forward": forward,
        "forward_source": forward_source,
        "rate": inp.rate,
        "time_to_expiry_years": t,
        "atm_strike": atm,
        "pcr_oi": analytics.pcr(sum(put_oi), sum(call_oi)),
        "pcr_volume": analytics.pcr(put_vol, call_vol),
        "max_pain": analytics.max_pain(ks, call_oi, put_oi),
        "atm_iv": sum(atm_ivs) / len(atm_ivs) if atm_ivs else None,
        "straddle": sum(leg_prices) if len(leg_prices) == 2 else None,
        "strikes": strikes,
        "smile": smile(strikes, forward),
    }
