"""Broker-neutral domain types: what every broker adapter produces and storage consumes.

Plain slotted dataclasses rather than pydantic models: a tick is built up to 100k times a
second on the ingest path; validation happens once, in the writer (see :data:`REJECT_REASONS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal, NamedTuple

from trading_helper.timeframes import IST, Timeframe


class DepthLevel(NamedTuple):
    """One order-book level. Immutable; a named tuple because a full Kite tick carries ten and
    a frozen dataclass costs about 0.3 us each to build (a quarter of a collector's time)."""

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
    #: time of the last trade the price and volume belong to (Kite ``last_trade_time``, Fyers
    #: ``last_traded_time``), when the mode carries it; candles bucket by it
    trade_ts: datetime | None = None


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
    #: no broker lists it any more (an expired contract); kept, its ticks and candles addressable
    expired: bool = False


#: where a candle comes from (the ``source`` of ``read_candles``, ``api.schemas.CandleOut``):
#: ``live`` built from ticks over a fully captured bucket, ``broker`` a broker's history, ``partial``
#: built from ticks over a bucket captured only in part (or still forming)
CandleSource = Literal["live", "broker", "partial"]


@dataclass(slots=True, frozen=True)
class Candle:
    """The one candle model: read from the database (``candles.read``), fetched from a broker's
    history (``source="broker"``; its timeframe is the request's), or forming on the WebSocket hub
    (``api.forming``, ``source="partial"``). It goes on the wire as ``api.schemas.CandleOut``."""

    bucket: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    open_interest: int | None = None
    source: CandleSource = "live"
    #: the series it belongs to (on the wire it is the answer's ``interval``, not a candle field)
    timeframe: Timeframe = field(kw_only=True)

    def wire(self) -> dict[str, object]:
        """The candle on the wire: the keys of :data:`CANDLE_WIRE_FIELDS`, times in IST (+05:30)."""
        return {
            "time": self.bucket.astimezone(IST).isoformat(),
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "open_interest": self.open_interest,
            "source": self.source,
        }


#: a candle's fields on the wire, in order: ``api.schemas.CandleOut`` documents them, the database
#: builds them for the REST answers (``storage.sql_candles.READ_JSON``), :meth:`Candle.wire` for the rest
CANDLE_WIRE_FIELDS = ("time", "open", "high", "low", "close", "volume", "open_interest", "source")


#: Reasons a tick (or a stream entry) is rejected; each is a label of ``th_ticks_rejected_total``.
#: The checks themselves live where the data is: the receiver (naive timestamps, full buffers),
#: the writer (ingest.batch.build_batch, on the hot path) and the broker parsers.
REJECT_REASONS = (
    "bad_price",
    "bad_quantity",
    "naive_timestamp",
    "timestamp_out_of_range",
    "unknown_instrument",
    "malformed_frame",
    "malformed_entry",
    "buffer_full",
)

MAX_CLOCK_SKEW = timedelta(days=1)
#: older ticks are refused: raw ticks are kept 7 days, and a straggler into a day whose ticks were
#: dropped would rebuild that day's candles from itself alone
MAX_TICK_AGE = timedelta(days=6)
