"""Candle timeframes: the only place where a timeframe becomes a relation name.

Every timeframe that reaches SQL goes through :func:`parse_timeframe`, so a relation name is
chosen from this whitelist and never formatted from caller input.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta, timezone

from trading_helper.errors import InvalidTimeframe

IST = timezone(timedelta(hours=5, minutes=30), "IST")

#: One bucket origin shared by every level (TimescaleDB requires it for stacked aggregates):
#: 1m/5m/15m fall on IST clock marks, 1h buckets start at 09:15 IST like the brokers' hourly
#: candles, and the 1d bucket runs 00:15 IST -> 00:15 IST (the whole IST trading day).
BUCKET_ORIGIN = datetime(2000, 1, 3, 0, 15, tzinfo=IST)


class Timeframe(enum.StrEnum):
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    D1 = "1d"

    @property
    def width(self) -> timedelta:
        return _WIDTH[self]

    @property
    def relation(self) -> str:
        """The candle relation (view) holding this timeframe: ``candles_5m`` etc."""
        return f"candles_{self.value}"

    def bucket_start(self, ts: datetime) -> datetime:
        """Start of the bucket holding ``ts`` (aware), in IST."""
        if ts.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware")
        steps = (ts - BUCKET_ORIGIN) // self.width
        return (BUCKET_ORIGIN + steps * self.width).astimezone(IST)


_WIDTH = {
    Timeframe.M1: timedelta(minutes=1),
    Timeframe.M5: timedelta(minutes=5),
    Timeframe.M15: timedelta(minutes=15),
    Timeframe.H1: timedelta(hours=1),
    Timeframe.D1: timedelta(days=1),
}

_ALIASES = {
    "1": Timeframe.M1, "1min": Timeframe.M1, "minute": Timeframe.M1,
    "5": Timeframe.M5, "5min": Timeframe.M5, "5minute": Timeframe.M5,
    "15": Timeframe.M15, "15min": Timeframe.M15, "15minute": Timeframe.M15,
    "60": Timeframe.H1, "60m": Timeframe.H1, "60minute": Timeframe.H1, "1hour": Timeframe.H1,
    "d": Timeframe.D1, "day": Timeframe.D1, "1day": Timeframe.D1,
}


def parse_timeframe(value: str | Timeframe) -> Timeframe:
    """Whitelist a timeframe (``1m``, ``5minute``, ``60``, ``day`` ...); anything else raises."""
    if isinstance(value, Timeframe):
        return value
    key = str(value).strip().lower()
    try:
        return Timeframe(key)
    except ValueError:
        pass
    if key in _ALIASES:
        return _ALIASES[key]
    allowed = ", ".join(t.value for t in Timeframe)
    raise InvalidTimeframe(f"unknown timeframe {value!r}: use one of {allowed}")
