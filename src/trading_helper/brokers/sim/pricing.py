"""How the simulator prices its derivatives: futures at the forward, options by Black-76 on it.

* **Rate**: one continuously compounded rate :data:`RATE` (10 %, the rate NSE's own option chain
  uses and the option chain's default) is both the futures' carry (``F = S e^{rT}``) and the
  options' discount rate, so a chain computed with that rate from these prices recovers the smile.
* **Time**: calendar time to the contract's expiry (15:30 IST on the expiry day) in years of 365
  days, the convention of the chain.
* **Smile**: the implied volatility of a strike is a quadratic in log-moneyness ``k = ln(K/F)``
  around each underlying's ATM volatility, with the negative skew of Indian index options (puts
  below the forward dearer than calls above it): ``iv = atm + SKEW * k + CURVE * k**2``, floored.

The Black-76 price itself comes from a library (:func:`black76_price`), never from formulas written
here. ``vollib`` (MIT, the maintained successor of ``py_vollib``, Peter Jäckel's "Let's be
rational") is used: ``opengreeks`` (the same function names, a Rust core) ships wheels that do not
import on Python 3.11 (0.1.0 and 0.2.0 need ``PyErr_SetRaisedException``, a 3.12 symbol), and the
project supports 3.11. ``trading_helper.options.black76`` (the option chain's wrapper) will take
this one call's place when it lands.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time
from typing import Final, Literal

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


def forward(spot: float, years: float, rate: float = RATE) -> float:
    """The forward (the future's fair price) of ``spot`` ``years`` ahead: ``S e^{rT}``."""
    return spot * math.exp(rate * years)


def smile_iv(atm_iv: float, strike: float, fwd: float) -> float:
    """The smile's implied volatility at ``strike`` for an underlying whose ATM volatility is ``atm_iv``."""
    k = math.log(strike / fwd)
    return max(MIN_IV, atm_iv + SKEW * k + CURVE * k * k)


def black76_price(flag: OptionFlag, fwd: float, strike: float, years: float, sigma: float) -> float:
    """The discounted Black-76 price of a European option on the forward (the library's call).
    At expiry (``years`` 0) it is the intrinsic value."""
    if years <= 0.0:
        return max(0.0, fwd - strike) if flag == "CE" else max(0.0, strike - fwd)
    # imported on first use: the library brings numpy and scipy, and a command that stops at once
    # (a port in use) should not wait for them
    from vollib.black import black

    return float(black("c" if flag == "CE" else "p", fwd, strike, years, RATE, sigma))


def option_price(
    flag: OptionFlag, spot: float, strike: float, expiry: date, now: datetime, atm_iv: float
) -> float:
    """The model price of an option on an underlying at ``spot`` (unrounded): Black-76 on the
    forward at the smile's volatility for the strike."""
    years = years_to_expiry(expiry, now)
    fwd = forward(spot, years)
    return black76_price(flag, fwd, strike, years, smile_iv(atm_iv, strike, fwd))
