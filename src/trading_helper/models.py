"""Broker-neutral domain types: what every broker adapter produces and storage consumes.

Plain slotted dataclasses rather than pydantic models: a tick is built up to 100k times a
second on the ingest path, and validation happens once, in :func:`validate_tick`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from trading_helper.timeframes import Timeframe


@dataclass(slots=True, frozen=True)
class DepthLevel:
    price: float
    quantity: int
    orders: int = 0


@dataclass(slots=True)
class Tick:
    """One market update for one instrument, with both of its times (timezone-aware)."""

    instrument_id: int
    exchange_ts: datetime
    received_ts: datetime
    last_price: float
    last_quantity: int | None = None
    #: cumulative volume traded today (Kite ``volume_traded``, Fyers ``vol_traded_today``)
    volume: int | None = None
    average_price: float | None = None
    open_interest: int | None = None
    bid_price: float | None = None
    bid_quantity: int | None = None
    ask_price: float | None = None
    ask_quantity: int | None = None
    bids: tuple[DepthLevel, ...] = ()
    asks: tuple[DepthLevel, ...] = ()


@dataclass(slots=True)
class Instrument:
    """An instrument, independent of any broker; ``broker_ids`` maps broker -> its token/symbol."""

    exchange: str
    tradingsymbol: str
    segment: str = ""
    instrument_type: str = ""
    name: str = ""
    expiry: date | None = None
    strike: float | None = None
    option_type: str | None = None
    lot_size: int = 1
    tick_size: float = 0.05
    id: int | None = None
    #: e.g. {"kite": "738561", "fyers": "NSE:RELIANCE-EQ"}
    broker_ids: dict[str, str] = field(default_factory=dict)
    #: e.g. {"fyers": "10100000002885"} (Fyers fytoken); optional second id per broker
    broker_aux_ids: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Candle:
    bucket: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    open_interest: int | None = None
    source: str = "live"


@dataclass(slots=True, frozen=True)
class HistoricalCandle:
    """A candle as fetched from a broker's historical API, before it is stored."""

    timeframe: Timeframe
    bucket: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    open_interest: int | None = None


#: Reasons a tick is rejected; each is a label of the ``ticks_rejected_total`` counter.
REJECT_REASONS = (
    "bad_price",
    "naive_timestamp",
    "timestamp_out_of_range",
    "unknown_instrument",
    "malformed_frame",
    "buffer_full",
)

MAX_CLOCK_SKEW = timedelta(days=1)
#: older ticks are refused: raw ticks are kept 7 days, and a straggler into a day whose ticks were
#: dropped would rebuild that day's candles from itself alone
MAX_TICK_AGE = timedelta(days=6)


def validate_tick(tick: Tick, now: datetime) -> str | None:
    """Return the rejection reason for ``tick`` or ``None`` when it may be stored."""
    price = tick.last_price
    if price is None or not isinstance(price, (int, float)) or not math.isfinite(price) or price <= 0:
        return "bad_price"
    ts = tick.exchange_ts
    if ts.tzinfo is None or ts.utcoffset() is None or tick.received_ts.tzinfo is None:
        return "naive_timestamp"
    if ts > now + MAX_CLOCK_SKEW or ts < now - MAX_TICK_AGE:
        return "timestamp_out_of_range"
    return None
