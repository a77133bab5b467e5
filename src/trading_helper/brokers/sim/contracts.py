"""The simulator's instrument master: what NSE lists, named and numbered as Kite names it.

* **Underlyings**: NIFTY 50 and NIFTY BANK (indices, no volume, no OI) and twenty large stocks,
  each with a level it trades around, a daily volatility, an ATM implied volatility and a lot size
  close to the real ones (lots as revised for 2026: NIFTY 65, BANKNIFTY 30).
* **Expiries** (NSE since 2025-09-01): NIFTY weekly options every Tuesday (Thursday before), the
  monthly contracts (futures, BANKNIFTY and stock options) on the month's last Tuesday; an expiry
  on a holiday moves to the previous trading day (the exchange calendar, as ``candles.calendar``).
* **Strikes** on NSE's steps around the spot: NIFTY 50, BANKNIFTY 100, stocks by price
  (:func:`strike_step`, an approximation of NSE's per-stock step table).
* **Trading symbols** as in Kite's instrument dump: ``NIFTY25D0924000CE`` for a weekly (year, one
  character month 1-9/O/N/D, day), ``NIFTY25DEC24000CE`` and ``NIFTY25DECFUT`` for the monthly.
* **Tokens** (ASCII digits, like Kite's): ``100001`` NIFTY 50, ``100002`` NIFTY BANK, then the
  stocks; a derivative's token spells its contract (:func:`contract_token`), so every process
  (API, ingest, backfill) knows what a token is without a shared table, and a contract keeps its
  token for life as expiries roll.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Final, Literal

from trading_helper.candles.calendar import year_sessions
from trading_helper.models import Instrument

Kind = Literal["INDEX", "EQ", "FUT", "CE", "PE"]


@dataclass(frozen=True, slots=True)
class Underlying:
    code: int  # position in :data:`UNDERLYINGS`, part of every token
    name: str  # Kite's ``name`` (and the derivatives' symbol prefix)
    tradingsymbol: str
    level: float  # the level it trades around (a mean-reverting walk)
    daily_vol: float
    atm_iv: float
    lot_size: int
    index: bool = False

    def step(self, price: float) -> float:
        return strike_step(self, price)


def _stock(code: int, name: str, level: float, lot: int, atm_iv: float = 0.24) -> Underlying:
    return Underlying(code, name, name, level, atm_iv / 16, atm_iv, lot)


UNDERLYINGS: Final = (
    Underlying(0, "NIFTY", "NIFTY 50", 25_000.0, 0.0075, 0.12, 65, index=True),
    Underlying(1, "BANKNIFTY", "NIFTY BANK", 53_000.0, 0.009, 0.14, 30, index=True),
    _stock(2, "RELIANCE", 1450, 500),
    _stock(3, "TCS", 3200, 175, 0.22),
    _stock(4, "HDFCBANK", 980, 550, 0.2),
    _stock(5, "INFY", 1550, 400, 0.24),
    _stock(6, "ICICIBANK", 1400, 700, 0.21),
    _stock(7, "SBIN", 850, 750, 0.25),
    _stock(8, "ITC", 410, 1600, 0.2),
    _stock(9, "LT", 3700, 175),
    _stock(10, "AXISBANK", 1150, 625, 0.25),
    _stock(11, "KOTAKBANK", 2100, 400, 0.22),
    _stock(12, "BHARTIARTL", 1950, 475, 0.22),
    _stock(13, "HINDUNILVR", 2450, 300, 0.2),
    _stock(14, "BAJFINANCE", 950, 750, 0.3),
    _stock(15, "MARUTI", 15_000, 50, 0.24),
    _stock(16, "TATASTEEL", 160, 5500, 0.3),
    _stock(17, "SUNPHARMA", 1700, 350, 0.22),
    _stock(18, "WIPRO", 250, 3000, 0.25),
    _stock(19, "ONGC", 240, 2250, 0.28),
    _stock(20, "NTPC", 340, 1500, 0.24),
    _stock(21, "POWERGRID", 290, 1900, 0.23),
)
BY_NAME: Final = {u.name: u for u in UNDERLYINGS}
CASH_TOKEN_BASE: Final = 100_001
#: the day the expiry weekday moved from Thursday to Tuesday (NSE circular, June 2025)
TUESDAY_FROM: Final = date(2025, 9, 1)
_STOCK_STEPS: Final = ((250.0, 2.5), (1000.0, 5.0), (1500.0, 10.0), (2500.0, 20.0), (5000.0, 50.0))
_WEEKLY_MONTH: Final = "123456789OND"
_EPOCH: Final = date(2000, 1, 1)
REGULAR_OPEN: Final = time(9, 15)
_KINDS: Final[tuple[Kind, ...]] = ("FUT", "CE", "PE")


#: NSE's index lot revisions (name -> (first expiry of the new lot, the lot before it)); the
#: table's ``lot_size`` is the current one (NIFTY 75 -> 65, BANKNIFTY 35 -> 30 from the January 2026 expiries)
_LOT_BEFORE: Final = {"NIFTY": (date(2026, 1, 1), 75), "BANKNIFTY": (date(2026, 1, 1), 35)}


def lot_size(underlying: Underlying, expiry: date) -> int:
    """The contract's lot: an index's as revised for its expiry, a stock's from the table."""
    revised = _LOT_BEFORE.get(underlying.name) if underlying.index else None
    if revised is not None and expiry < revised[0]:
        return revised[1]
    return underlying.lot_size


def strike_step(underlying: Underlying, price: float) -> float:
    """NSE's strike interval: NIFTY 50, BANKNIFTY 100; a stock's by its price."""
    if underlying.index:
        return 50.0 if underlying.name == "NIFTY" else 100.0
    return next((step for top, step in _STOCK_STEPS if price <= top), 100.0)


def tick_size(underlying: Underlying) -> float:
    """NSE's price step: 0.01 for stocks below 250 (since June 2025), else 0.05."""
    return 0.01 if not underlying.index and underlying.level < 250 else 0.05


@dataclass(frozen=True, slots=True)
class Contract:
    underlying: Underlying
    kind: Kind
    expiry: date | None = None
    strike: float | None = None
    weekly: bool = False  # a weekly option (its symbol carries the day)

    @property
    def derivative(self) -> bool:
        return self.expiry is not None

    @property
    def tick(self) -> float:
        """The price step: 0.05 for derivatives, a stock's by its price (:func:`tick_size`)."""
        return 0.05 if self.expiry is not None else tick_size(self.underlying)

    @property
    def lot(self) -> int:
        """Units per lot: 1 for cash and indices."""
        return 1 if self.expiry is None else lot_size(self.underlying, self.expiry)


@lru_cache(maxsize=64)
def _sessions(year: int) -> dict[date, tuple[datetime, datetime]]:
    return {day: (start, end) for day, start, end in year_sessions("NSE", year)}


def session_hours(day: date) -> tuple[datetime, datetime] | None:
    """The NSE session of ``day`` (open, close; pandas_market_calendars through ``candles.calendar``),
    None on a weekend or holiday."""
    return _sessions(day.year).get(day)


def trading_days(year: int) -> list[date]:
    return sorted(_sessions(year))


def is_trading_day(day: date) -> bool:
    return day in _sessions(day.year)


def next_trading_day(day: date) -> date:
    """The first trading day after ``day``."""
    day += timedelta(days=1)
    while not is_trading_day(day):
        day += timedelta(days=1)
    return day


def previous_trading_day(day: date) -> date:
    while not is_trading_day(day):
        day -= timedelta(days=1)
    return day


def expiry_day(day: date) -> date:
    """``day`` when it has a regular session, else the regular trading day before it (a holiday's
    special session, such as Muhurat trading, holds no expiry: 2025-10-21's moved to 10-20)."""
    while (hours := session_hours(day)) is None or hours[0].time() != REGULAR_OPEN:
        day -= timedelta(days=1)
    return day


def _expiry_weekday(day: date) -> int:
    return 1 if day >= TUESDAY_FROM else 3  # Tuesday, Thursday before September 2025


def monthly_expiry(year: int, month: int) -> date:
    """The month's last Tuesday (Thursday before 2025-09), or the regular trading day before it."""
    last = date(year, month, calendar.monthrange(year, month)[1])
    return expiry_day(last - timedelta(days=(last.weekday() - _expiry_weekday(last)) % 7))


def monthly_expiries(today: date, count: int) -> list[date]:
    """The next ``count`` monthly expiries on or after ``today``."""
    out: list[date] = []
    year, month = today.year, today.month
    while len(out) < count:
        expiry = monthly_expiry(year, month)
        if expiry >= today:
            out.append(expiry)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def weekly_expiries(today: date, count: int) -> list[date]:
    """The next ``count`` NIFTY weekly expiries (monthly ones included) on or after ``today``."""
    out: list[date] = []
    day = today - timedelta(days=7)
    while len(out) < count:
        day += timedelta(days=1)
        if day.weekday() == _expiry_weekday(day):
            expiry = expiry_day(day)
            if expiry >= today and expiry not in out:
                out.append(expiry)
    return out


def tradingsymbol(contract: Contract) -> str:
    u, e = contract.underlying, contract.expiry
    if e is None:
        return u.tradingsymbol
    if contract.kind == "FUT":
        return f"{u.name}{e:%y}{e:%b}FUT".upper()
    strike = f"{contract.strike:.2f}".rstrip("0").rstrip(".")
    if contract.weekly:
        return f"{u.name}{e:%y}{_WEEKLY_MONTH[e.month - 1]}{e:%d}{strike}{contract.kind}"
    return f"{u.name}{e:%y}{e:%b}".upper() + f"{strike}{contract.kind}"


def contract_token(contract: Contract) -> str:
    """``100001 + code`` for an index or a stock; a derivative: ``2``, the underlying (2 digits), the
    expiry (4 digits, days since 2000-01-01), the kind (0 FUT, 1 CE, 2 PE), the strike x 100 (8
    digits): 16 digits, below 2**53 so JavaScript keeps it exact."""
    u = contract.underlying
    if contract.expiry is None:
        return str(CASH_TOKEN_BASE + u.code)
    strike = round((contract.strike or 0.0) * 100)
    days = (contract.expiry - _EPOCH).days
    return f"2{u.code:02d}{days:04d}{_KINDS.index(contract.kind)}{strike:08d}"


@lru_cache(maxsize=65_536)
def decode_token(token: str) -> Contract | None:
    """The contract a simulator token names; None for a token the simulator never listed."""
    if not token.isascii() or not token.isdigit():
        return None
    if len(token) == 6 and 0 <= (code := int(token) - CASH_TOKEN_BASE) < len(UNDERLYINGS):
        u = UNDERLYINGS[code]
        return Contract(u, "INDEX" if u.index else "EQ")
    if len(token) != 16 or token[0] != "2" or int(token[1:3]) >= len(UNDERLYINGS) or int(token[7]) > 2:
        return None
    u, expiry = UNDERLYINGS[int(token[1:3])], _EPOCH + timedelta(days=int(token[3:7]))
    kind = _KINDS[int(token[7])]
    if kind == "FUT":
        return Contract(u, kind, expiry)
    weekly = u.name == "NIFTY" and expiry != monthly_expiry(expiry.year, expiry.month)
    return Contract(u, kind, expiry, int(token[8:]) / 100, weekly)


def instrument(contract: Contract) -> Instrument:
    u = contract.underlying
    if contract.expiry is None:
        exchange, segment = "NSE", "INDICES" if u.index else "NSE"
    else:
        exchange, segment = "NFO", "NFO-FUT" if contract.kind == "FUT" else "NFO-OPT"
    option = contract.kind if contract.kind in ("CE", "PE") else None
    return Instrument(
        exchange=exchange,
        tradingsymbol=tradingsymbol(contract),
        name=u.name,
        segment=segment,
        instrument_type=contract.kind,
        expiry=contract.expiry,
        strike=contract.strike,
        option_type=option,
        lot_size=contract.lot,
        tick_size=contract.tick,
        broker_ids={"sim": contract_token(contract)},
    )
