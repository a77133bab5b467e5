"""How the simulator prices its derivatives: futures at the forward, options by Black-76 on it.

* **Rate**: one continuously compounded rate :data:`RATE` (10 %, the rate NSE's own option chain
  uses and the option chain's default) is both the futures' carry (``F = S e^{rT}``) and the
  options' discount rate, so a chain computed with that rate from these prices recovers the smile.
* **Time**: calendar time to the contract's expiry (15:30 IST on the expiry day) in years of 365
  days, the convention of the chain.
* **Smile**: the implied volatility of a strike is a quadratic in log-moneyness ``k = ln(K/F)``
  around each underlying's ATM volatility, with the negative skew of Indian index options (puts
  below the forward dearer than calls above it): ``iv = atm + SKEW * k + CURVE * k**2``, floored.

The Black-76 price itself is the option chain's (:mod:`trading_helper.options.black76`, the
project's one pricing path), never formulas written here. Its library pays about 70 µs per call
whatever the number of options, so the simulator prices many at once: :func:`model_prices` takes
arrays (a contract's minutes of a day, a feed frame's contracts).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time
from typing import Final, Literal

import numpy as np
from numpy.typing import ArrayLike

from trading_helper.options import black76
from trading_helper.options.black76 import FloatArray
from trading_helper.timeframes import IST

#: the carry of futures and the discount rate of options (continuously compounded, per year)
RATE: Final = 0.10
#: NFO contracts expire at the close of their expiry day
EXPIRY_TIME: Final = time(15, 30)
YEAR_SECONDS: Final = 365.0 * 86_400
#: the smile's slope and curvature in log-moneyness, and the lowest volatility it gives
SKEW: Final = -0.6
CURVE: Final = 3.0
MIN_IV: Final = 0.05

OptionFlag = Literal["CE", "PE"]


def expires_at(expiry: date) -> datetime:
    """The instant a contract expiring on ``expiry`` expires (15:30 IST)."""
    return datetime.combine(expiry, EXPIRY_TIME, tzinfo=IST)


def years_to_expiry(expiry: date, now: datetime) -> float:
    """Calendar years from ``now`` to the expiry instant (0 once expired)."""
    return max(0.0, (expires_at(expiry) - now).total_seconds() / YEAR_SECONDS)


def forward(spot: ArrayLike, years: ArrayLike, rate: float = RATE) -> FloatArray:
    """The forward (the future's fair price) of ``spot`` ``years`` ahead: ``S e^{rT}`` (element by
    element; a 0-d array for scalars)."""
    return np.asarray(spot, dtype=np.float64) * np.exp(rate * np.asarray(years, dtype=np.float64))


def smile_iv(atm_iv: ArrayLike, strike: ArrayLike, fwd: ArrayLike) -> FloatArray:
    """The smile's implied volatility at ``strike`` for an underlying whose ATM volatility is
    ``atm_iv`` (element by element)."""
    k = np.log(np.asarray(strike, dtype=np.float64) / np.asarray(fwd, dtype=np.float64))
    return np.maximum(MIN_IV, np.asarray(atm_iv, dtype=np.float64) + SKEW * k + CURVE * k * k)


def black76_price(
    flag: OptionFlag | Sequence[OptionFlag],
    fwd: ArrayLike,
    strike: ArrayLike,
    years: ArrayLike,
    sigma: ArrayLike,
) -> FloatArray:
    """The discounted Black-76 prices of European options on the forward, element by element
    (options/black76.py at the simulator's rate); at expiry (``years`` 0) the intrinsic value."""
    f, k, t, s = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (fwd, strike, years, sigma)))
    call = np.broadcast_to(np.asarray(flag) == "CE", f.shape)
    out: FloatArray = np.where(call, np.maximum(f - k, 0.0), np.maximum(k - f, 0.0))
    live = t > 0.0
    if live.any():
        flags = np.where(call, "c", "p")[live]
        out[live] = black76.price(flags, f[live], k[live], t[live], RATE, s[live])
    return out


def model_prices(
    kinds: Sequence[str], spots: ArrayLike, strikes: ArrayLike, years: ArrayLike, atm_ivs: ArrayLike
) -> FloatArray:
    """The model prices (unrounded) of derivatives, element by element, ``years`` to expiry
    (:func:`years_to_expiry`): a future (``FUT``) at the forward, an option (``CE``, ``PE``) by
    Black-76 on the forward at the smile's volatility for its strike (a future's strike and
    volatility are not read)."""
    fwd = forward(spots, years)
    k, t, atm = (
        np.broadcast_to(np.asarray(v, dtype=np.float64), fwd.shape) for v in (strikes, years, atm_ivs)
    )
    flags = np.broadcast_to(np.asarray(kinds), fwd.shape)
    option = flags != "FUT"
    if option.any():
        f = fwd[option]
        fwd[option] = black76_price(
            flags[option], f, k[option], t[option], smile_iv(atm[option], k[option], f)
        )
    return fwd
