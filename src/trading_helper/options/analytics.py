"""Chain analytics (pure): the forward by put-call parity, ATM strike, PCR, max pain, OI build-up.

Every function takes plain sequences or arrays and has no I/O; ``chain.py`` applies them to a chain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal

import numpy as np
from numpy.typing import ArrayLike

Buildup = Literal["long_buildup", "short_buildup", "short_covering", "long_unwinding"]
BUILDUPS: Final[tuple[Buildup, ...]] = ("long_buildup", "short_buildup", "short_covering", "long_unwinding")
#: how many strikes (those where call and put prices are closest) the parity forward averages
PARITY_STRIKES: Final = 2


def buildup(price_change: float | None, oi_change: float | None) -> Buildup | None:
    """The OI build-up of a contract over a window: price up + OI up is long build-up, price down +
    OI up short build-up, price up + OI down short covering, price down + OI down long unwinding;
    None when either did not move (or is unknown)."""
    if price_change is None or oi_change is None or not price_change or not oi_change:
        return None
    if math.isnan(price_change) or math.isnan(oi_change):
        return None
    if oi_change > 0:
        return "long_buildup" if price_change > 0 else "short_buildup"
    return "short_covering" if price_change > 0 else "long_unwinding"


def pcr(put_total: float, call_total: float) -> float | None:
    """Put-call ratio of two totals (OI or volume); None when the calls total nothing."""
    return put_total / call_total if call_total > 0 else None


def max_pain(strikes: ArrayLike, call_oi: ArrayLike, put_oi: ArrayLike) -> float | None:
    """The expiry price, among the strikes, at which option writers pay the least: the settlement
    ``S`` minimising sum(call_oi * max(S - K, 0)) + sum(put_oi * max(K - S, 0)); the lowest such
    strike on a tie; None without open interest."""
    k = np.asarray(strikes, dtype=np.float64)
    c = np.nan_to_num(np.asarray(call_oi, dtype=np.float64))
    p = np.nan_to_num(np.asarray(put_oi, dtype=np.float64))
    if k.size == 0 or not (c.sum() + p.sum()) > 0:
        return None
    settle = k[:, None]  # one row per candidate settlement price
    payout = (c * np.maximum(settle - k, 0.0)).sum(axis=1) + (p * np.maximum(k - settle, 0.0)).sum(axis=1)
    best = payout.min()
    return float(k[payout == best].min())


def parity_forward(
    strikes: Sequence[float],
    call_price: Sequence[float],
    put_price: Sequence[float],
    rate: float,
    t_years: float,
) -> float | None:
    """The forward implied by put-call parity, F = K + e^(rt) (C - P), averaged over the
    ``PARITY_STRIKES`` strikes where call and put prices are closest (the ATM strikes, where both
    are liquid and the smile's error is smallest); None unless some strike has both prices."""
    k = np.asarray(strikes, dtype=np.float64)
    c = np.asarray(call_price, dtype=np.float64)
    p = np.asarray(put_price, dtype=np.float64)
    both = np.isfinite(c) & np.isfinite(p) & (c > 0) & (p > 0)
    if t_years <= 0 or not both.any():
        return None
    k, c, p = k[both], c[both], p[both]
    nearest = np.argsort(np.abs(c - p), kind="stable")[:PARITY_STRIKES]
    return float(np.mean(k[nearest] + math.exp(rate * t_years) * (c[nearest] - p[nearest])))


def atm_strike(strikes: Sequence[float], reference: float | None) -> float | None:
    """The strike nearest ``reference`` (the forward, else the spot); the lower one on a tie."""
    if reference is None or not strikes or not math.isfinite(reference):
        return None
    return min(sorted(strikes), key=lambda k: abs(k - reference))
