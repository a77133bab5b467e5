"""Request and response bodies of the HTTP API (the chart page depends on these shapes)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from trading_helper.instruments.refs import MAX_TOKEN
from trading_helper.models import CandleSource, Instrument

Interval = Literal["1m", "5m", "15m", "1h", "1d"]
#: printable text only: a NUL or control character can never reach SQL as a value
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"
RefText = Annotated[str, Field(min_length=1, max_length=100, pattern=TEXT_PATTERN)]
#: a JSON number is a broker token: positive, at most unsigned 32 bits (``instruments/refs.py``)
RefNumber = Annotated[int, Field(ge=1, le=MAX_TOKEN)]
InstrumentRef = RefNumber | RefText

_INSTRUMENT_EXAMPLE: dict[str, Any] = {
    "id": 1,
    "exchange": "NSE",
    "tradingsymbol": "RELIANCE",
    "name": "RELIANCE INDUSTRIES",
    "segment": "NSE",
    "instrument_type": "EQ",
    "expiry": None,
    "strike": None,
    "option_type": None,
    "lot_size": 1,
    "tick_size": 0.05,
    "expired": False,
    "broker_ids": {"kite": "738561"},
}


class InstrumentOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_INSTRUMENT_EXAMPLE]})

    id: int
    exchange: str
    tradingsymbol: str
    name: str
    segment: str
    instrument_type: str
    expiry: date | None
    strike: float | None
    option_type: str | None
    lot_size: int
    tick_size: float
    expired: bool = False
    broker_ids: dict[str, str] = Field(default_factory=dict, description="broker -> its token or symbol")

    @classmethod
    def of(cls, inst: Instrument) -> InstrumentOut:
        assert inst.id is not None
        return cls(
            id=inst.id,
            exchange=inst.exchange,
            tradingsymbol=inst.tradingsymbol,
            name=inst.name,
            segment=inst.segment,
            instrument_type=inst.instrument_type,
            expiry=inst.expiry,
            strike=inst.strike,
            option_type=inst.option_type,
            lot_size=inst.lot_size,
            tick_size=inst.tick_size,
            expired=inst.expired,
            broker_ids=dict(inst.broker_ids),
        )


class InstrumentPage(BaseModel):
    items: list[InstrumentOut]
    total: int = Field(description="how many instruments match the filters")
    limit: int
    offset: int


class SyncResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"broker": "kite", "count": 98213}]})

    broker: str
    count: int


class InstrumentList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"instruments": [1, "NSE:RELIANCE", "738561"]}]}
    )

    instruments: list[InstrumentRef] = Field(
        min_length=1,
        max_length=5000,
        validation_alias=AliasChoices("instruments", "tokens"),
        description="our ids, EXCHANGE:SYMBOL, or the configured broker's tokens (`tokens` also accepted)",
    )


class Subscribed(BaseModel):
    subscribed: list[int]


class Unsubscribed(BaseModel):
    unsubscribed: list[int]


class Subscription(InstrumentOut):
    mode: str
    since: datetime


class SubscriptionList(BaseModel):
    items: list[Subscription]
    total: int


class CandleOut(BaseModel):
    """A candle on the wire: :class:`~trading_helper.models.Candle` by ``Candle.wire()``, or built by
    the database in the same shape (``storage.sql_candles.READ_JSON``); fields in ``CANDLE_WIRE_FIELDS`` order."""

    time: datetime = Field(description="bucket start, ISO 8601 in IST (+05:30)")
    open: float
    high: float
    low: float
    close: float
    volume: int
    open_interest: int | None
    source: CandleSource = Field(
        description="live: built from ticks over a fully captured bucket; broker: broker history; "
        "partial: built from ticks over a bucket only partly captured (or still forming)"
    )


class BackfillOut(BaseModel):
    fetched_ranges: int = Field(description="ranges fetched from the broker for this request")
    broker_calls: int = Field(description="historical fetches sent to the broker for this request")
    error: str | None = Field(
        default=None,
        description="why the backfill stopped (the stored candles are "
        "still returned), e.g. a broker login is needed",
    )


class CandleResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "instrument": _INSTRUMENT_EXAMPLE,
                    "interval": "5m",
                    "candles": [
                        {
                            "time": "2025-10-17T09:15:00+05:30",
                            "open": 1375.0,
                            "high": 1379.9,
                            "low": 1372.1,
                            "close": 1378.4,
                            "volume": 412304,
                            "open_interest": None,
                            "source": "broker",
                        }
                    ],
                    "backfill": {"fetched_ranges": 1, "broker_calls": 1, "error": None},
                }
            ]
        }
    )

    instrument: InstrumentOut
    interval: Interval
    candles: list[CandleOut]
    backfill: BackfillOut


class CandleRequest(BaseModel):
    """The specification's body. Naive times are taken as IST."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "instrument_token": 256265,
                    "from_date": "2025-10-17T09:15:00+05:30",
                    "to_date": "2025-10-17T15:30:00+05:30",
                    "interval": "5m",
                }
            ]
        }
    )

    instrument_token: InstrumentRef = Field(
        description="the configured broker's token (Kite instrument_token, Fyers symbol); our id and "
        "EXCHANGE:SYMBOL are accepted too"
    )
    from_date: datetime = Field(description="start (inclusive), ISO 8601; naive = IST")
    to_date: datetime = Field(description="end (exclusive), ISO 8601; naive = IST")
    interval: Interval = "1m"


class ErrorOut(BaseModel):
    detail: str
    code: str


class FieldProblem(BaseModel):
    field: str = Field(description="the field's path (`instruments.0`); empty for the request as a whole")
    message: str


class InvalidRequestOut(ErrorOut):
    errors: list[FieldProblem] | None = Field(
        default=None, description="each field that does not fit (absent for an invalid reference)"
    )
