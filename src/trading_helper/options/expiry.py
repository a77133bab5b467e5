"""Time to expiry in calendar years, from the exchange's own expiry time.

Contracts expire at the close of their expiry day (IST): NSE and BSE equity derivatives (NFO, BFO)
at 15:30, currency derivatives (CDS, BCD) at 12:30 (the RBI reference rate time), MCX options at
the end of the evening session, 23:30 (the 23:55 close of US winter time is not modelled: at most
25 minutes on a contract's last day). Calendar time (days / 365), as NSE's own chain computes it.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Final

from trading_helper.timeframes import IST

SECONDS_PER_YEAR: Final = 365.0 * 86_400.0
#: expiry time of day (IST) per exchange segment
EXPIRY_TIME: Final[dict[str, time]] = {
    "NFO": time(15, 30),
    "BFO": time(15, 30),
    "CDS": time(12, 30),
    "BCD": time(12, 30),
    "MCX": time(23, 30),
}
DEFAULT_EXPIRY_TIME: Final = time(15, 30)


def expiry_moment(exchange: str, expiry: date) -> datetime:
    """When a contract of ``exchange`` expiring on ``expiry`` stops trading (aware, IST)."""
    return datetime.combine(expiry, EXPIRY_TIME.get(exchange.upper(), DEFAULT_EXPIRY_TIME), IST)


def years_to_expiry(exchange: str, expiry: date, as_of: datetime) -> float:
    """Calendar years from ``as_of`` (aware) to the contract's expiry; 0 once expired."""
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    return max(0.0, (expiry_moment(exchange, expiry) - as_of).total_seconds() / SECONDS_PER_YEAR)
