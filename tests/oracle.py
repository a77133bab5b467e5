"""An independent computation of candles, for checking the database and the writer.

The candle rules (buckets, OHLC and volume from trades) live in the package, in
trading_helper.bench.soak.oracle, because the soak benchmark checks with them too; which updates
are trades, and their volume, is said again here.

Deliberately naive: :func:`stored_trades` says again, in datetime arithmetic, which received
updates are trades, at what time and with how much volume (the writer does it in integer
microseconds, trading_helper.ingest.volume); :func:`candles` computes every timeframe from those
trades themselves (the database stacks levels on each other), with the bucket rule written out again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from trading_helper.bench.soak.oracle import IST, ORIGIN, WIDTHS, Key, Ohlc, RawTick, bucket_of, candles
from trading_helper.models import Tick

__all__ = [
    "IST",
    "ORIGIN",
    "WIDTHS",
    "CaptureStart",
    "Key",
    "Ohlc",
    "RawTick",
    "bucket_of",
    "candles",
    "stored_trades",
]


@dataclass(frozen=True)
class CaptureStart:
    """The feed (re)connected or subscribed ``instrument_ids`` at ``at``."""

    instrument_ids: frozenset[int]
    at: datetime


@dataclass
class _Baseline:
    day: date | None = None
    volume: int = 0
    trade: datetime | None = None
    capture: datetime | None = None


def stored_trades(arrival: Iterable[Tick | CaptureStart]) -> list[RawTick]:
    """The tick_data rows the writer must store for updates (and capture starts) in arrival order.

    A trade's time is its last-trade time (else exchange time), moved 1 µs past the latest time
    already given in its second. Its volume is what the day's cumulative volume grew by since the
    largest value seen; the first of an IST day gets all of it before 09:16 IST (unless capture
    only started on a later day), else its own last quantity. An update repeating the counted
    volume with no newer trade time, or a first update whose trade is older than its capture, is
    no trade (it goes to quote_updates).
    """
    latest_in_second: dict[tuple[int, datetime], datetime] = {}
    state: dict[int, _Baseline] = {}
    out: list[RawTick] = []
    for t in arrival:
        if isinstance(t, CaptureStart):
            for i in t.instrument_ids:
                state.setdefault(i, _Baseline()).capture = t.at
            continue
        when = t.trade_ts or t.exchange_ts
        delta = 0
        if t.volume is not None:
            b = state.setdefault(t.instrument_id, _Baseline())
            local = when.astimezone(IST)
            day = local.date()
            if b.day == day:
                if t.volume > b.volume:
                    delta = t.volume - b.volume
                    b.volume, b.trade = t.volume, t.trade_ts
                elif t.volume == b.volume:
                    if t.trade_ts is None or b.trade is None or t.trade_ts <= b.trade:
                        continue
                    b.trade = t.trade_ts
            elif b.day is None or b.day < day:
                capture_day = None if b.capture is None else b.capture.astimezone(IST).date()
                b.day, b.volume, b.trade = day, t.volume, t.trade_ts
                if local.time() < time(9, 16) and (capture_day is None or capture_day <= day):
                    delta = t.volume
                elif (
                    t.trade_ts is not None
                    and b.capture is not None
                    and t.trade_ts < b.capture.replace(microsecond=0)
                ):  # seconds
                    continue
                else:
                    delta = min(t.last_quantity or 0, t.volume)
        key = (t.instrument_id, when.replace(microsecond=0))
        if key in latest_in_second and when <= latest_in_second[key]:
            when = latest_in_second[key] + timedelta(microseconds=1)
        latest_in_second[key] = when
        out.append(RawTick(when, t.instrument_id, t.last_price, delta, t.open_interest))
    return out
