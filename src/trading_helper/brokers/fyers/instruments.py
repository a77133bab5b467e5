"""Fyers symbol master CSV (``{FYERS_SYMBOL_MASTER_URL}/NSE_CM.csv`` ...) -> Instruments. No I/O.

The files have no header row. Column order, as Fyers documents it ("Symbol Master") and as
projects reading them (e.g. the ``SYMBOLS_COLS`` of several fyers clients) agree::

     0 Fytoken            1 Symbol Details        2 Exchange Instrument type
     3 Minimum lot size   4 Tick size             5 ISIN
     6 Trading Session    7 Last update date      8 Expiry date (epoch seconds)
     9 Symbol ticker      10 Exchange             11 Segment
    12 Scrip code         13 Underlying symbol    14 Underlying scrip code
    15 Strike price       16 Option type          17 Underlying FyToken   18-20 reserved

Fyers has reordered these columns before (their forum), so a row is only accepted when its
ticker looks like ``EXCHANGE:NAME`` and its fytoken is all digits; anything else is counted,
never guessed at.
"""

from __future__ import annotations

import csv
import io
import math
import re
from datetime import date, datetime

from trading_helper.brokers.fyers.constants import BROKER_NAME
from trading_helper.models import Instrument
from trading_helper.timeframes import IST

COL_FYTOKEN, COL_DETAILS, COL_LOT, COL_TICK, COL_EXPIRY, COL_TICKER = 0, 1, 3, 4, 8, 9
COL_SCRIP_CODE, COL_UNDERLYING, COL_STRIKE, COL_OPTION_TYPE = 12, 13, 15, 16
MIN_COLUMNS = 17

_TICKER = re.compile(r"^[A-Z]+:\S+$")
_OPTION_TYPES = frozenset({"CE", "PE"})


def parse_symbol_master(text: str, file_name: str, exchange: str) -> tuple[list[Instrument], int]:
    """The instruments of one master file and the number of rows that could not be read."""
    instruments: list[Instrument] = []
    rejected = 0
    for row in csv.reader(io.StringIO(text)):
        if not row or not any(cell.strip() for cell in row):
            continue
        instrument = _row_to_instrument(row, file_name, exchange)
        if instrument is None:
            rejected += 1
        else:
            instruments.append(instrument)
    return instruments, rejected


def _row_to_instrument(row: list[str], file_name: str, exchange: str) -> Instrument | None:
    if len(row) < MIN_COLUMNS:
        return None
    fytoken = row[COL_FYTOKEN].strip()
    ticker = row[COL_TICKER].strip()
    if not fytoken.isdigit() or not _TICKER.match(ticker):
        return None
    try:
        lot_size = int(float(row[COL_LOT] or 1))
        tick_size = float(row[COL_TICK] or 0.05)
        strike = float(row[COL_STRIKE]) if row[COL_STRIKE].strip() else None
    except ValueError:
        return None
    if not math.isfinite(tick_size) or (strike is not None and not math.isfinite(strike)):
        return None
    option_type = row[COL_OPTION_TYPE].strip().upper()
    option_type = option_type if option_type in _OPTION_TYPES else ""
    name_part = ticker.split(":", 1)[1]
    instrument_type = _instrument_type(name_part, option_type, file_name)
    underlying = row[COL_UNDERLYING].strip()
    return Instrument(
        exchange=exchange,
        # Kite names an NSE/BSE equity by its bare symbol (SBIN); every other series keeps
        # its suffix (XYZ-BE), as do Fyers' derivatives (NIFTY24DECFUT).
        tradingsymbol=name_part[:-3] if name_part.endswith("-EQ") else name_part,
        segment=file_name,
        instrument_type=instrument_type,
        name=underlying if underlying and instrument_type != "EQ" else row[COL_DETAILS].strip(),
        expiry=_expiry(row[COL_EXPIRY]),
        strike=strike if option_type and strike and strike > 0 else None,
        option_type=option_type or None,
        lot_size=max(lot_size, 1),
        tick_size=tick_size if tick_size > 0 else 0.05,
        broker_ids={BROKER_NAME: ticker},
        broker_aux_ids={BROKER_NAME: fytoken},
    )


def _instrument_type(name_part: str, option_type: str, file_name: str) -> str:
    """Kite's vocabulary: EQ, FUT, CE, PE, plus INDEX (cash-market series such as BE are EQ)."""
    if option_type:
        return option_type
    if name_part.endswith("-INDEX"):
        return "INDEX"
    if file_name.endswith("_CM"):
        return "EQ"
    return "FUT" if name_part.endswith("FUT") else ""


def _expiry(cell: str) -> date | None:
    """Expiry is epoch seconds (0 or empty when none); the exchange's date is the IST date."""
    try:
        seconds = int(float(cell))
    except ValueError:
        return None
    if seconds <= 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=IST).date()
    except (OverflowError, OSError, ValueError):
        return None
