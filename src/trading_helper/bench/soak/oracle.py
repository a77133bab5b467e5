"""An independent computation of candles straight from raw tick rows, for checking the database.

Deliberately naive: every timeframe is computed from the ticks themselves (the database stacks
levels on each other), in plain Python with the bucket rule written out again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

IST = timezone(timedelta(hours=5, minutes=30))
ORIGIN = datetime(2000, 1, 3, 0, 15, tzinfo=IST)
WIDTHS = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}


@dataclass(frozen=True)
class RawTick:
    time: datetime
    instrument_id: int
    ltp: float
    volume_delta: int
    open_interest: int | None


Key = tuple[str, int, datetime]
Ohlc = tuple[float, float, float, float, int, int | None, int]


def bucket_of(ts: datetime, width: timedelta) -> datetime:
    return ORIGIN + ((ts - ORIGIN) // width) * width


def candles(ticks: Iterable[RawTick]) -> dict[Key, Ohlc]:
    groups: dict[Key, list[RawTick]] = {}
    for t in ticks:
        for tf, width in WIDTHS.items():
            groups.setdefault((tf, t.instrument_id, bucket_of(t.time, width)), []).append(t)
    out: dict[Key, Ohlc] = {}
    for key, rows in groups.items():
        rows.sort(key=lambda r: r.time)
        prices = [r.ltp for r in rows]
        out[key] = (
            rows[0].ltp,
            max(prices),
            min(prices),
            rows[-1].ltp,
            sum(r.volume_delta for r in rows),
            rows[-1].open_interest,
            len(rows),
        )
    return out
