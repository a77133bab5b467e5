"""Request and response bodies of the option chain routes (``api/routes/options.py``)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from trading_helper.api.schemas import RefText
from trading_helper.options.black76 import REASONS

Metric = Literal["atm_iv", "pcr_oi", "pcr_volume", "max_pain", "straddle", "forward"]
IvReason = Literal[REASONS]  # type: ignore[valid-type]
Buildup = Literal["long_buildup", "short_buildup", "short_covering", "long_unwinding"]


class OptionSideOut(BaseModel):
    instrument: str = Field(description="the contract's trading symbol")
    instrument_id: int
    ltp: float | None
    bid: float | None
    ask: float | None
    iv_price: float | None = Field(
        description="the price the IV was solved from: the bid/ask mid, else the LTP"
    )
    oi: int | None
    oi_change: int | None = Field(description="OI now minus OI at the window's first snapshot")
    volume: int | None
    iv: float | None = Field(description="Black-76 implied volatility (0.18 = 18 %); null: see iv_reason")
    iv_reason: IvReason | None
    delta: float | None
    gamma: float | None
    theta: float | None = Field(description="per calendar day")
    vega: float | None = Field(description="per volatility point (1 %)")
    buildup: Buildup | None


class StrikeOut(BaseModel):
    strike: float
    ce: OptionSideOut | None
    pe: OptionSideOut | None


class SmilePoint(BaseModel):
    strike: float
    iv: float
    side: Literal["ce", "pe"]


class FutureOut(BaseModel):
    instrument: str
    instrument_id: int
    ltp: float | None
    oi: int | None
    oi_change: int | None
    buildup: Buildup | None


class ChainOut(BaseModel):
    underlying: str
    expiry: str
    as_of: str
    spot: float | None
    forward: float | None
    forward_source: Literal["parity", "future"] | None
    rate: float
    time_to_expiry_years: float
    atm_strike: float | None
    pcr_oi: float | None
    pcr_volume: float | None
    max_pain: float | None
    atm_iv: float | None
    straddle: float | None = Field(description="ATM call + put (their IV prices)")
    strikes: list[StrikeOut]
    smile: list[SmilePoint] = Field(description="per strike the out-of-the-money side's IV")
    future: FutureOut | None = Field(description="the chain's future, with its OI build-up over the window")


class ExpiryOut(BaseModel):
    expiry: str
    calls: int
    puts: int
    min_strike: float | None
    max_strike: float | None


class ExpiriesOut(BaseModel):
    underlying: str
    expiries: list[ExpiryOut]


class SeriesPoint(BaseModel):
    time: str
    value: float | None


class SeriesOut(BaseModel):
    underlying: str
    expiry: str
    metric: Metric
    points: list[SeriesPoint]


class OptionSubscribeIn(BaseModel):
    underlying: RefText = Field(examples=["NSE:NIFTY 50"])
    expiry: date | None = Field(default=None, description="YYYY-MM-DD; default: the nearest expiry")
    strikes: int = Field(default=10, ge=1, le=100, description="strikes each side of ATM")


class OptionSubscribeOut(BaseModel):
    underlying: str
    expiry: str
    strikes: int
    subscribed: list[int]
