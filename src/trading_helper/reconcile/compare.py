"""Live 1m candles against the broker's, bucket by bucket (pure: no I/O).

Only buckets wholly inside live coverage are compared: elsewhere capture was down and a missing
or thin live candle says nothing about the data. There, a bucket only one side has is a
difference (``live_missing``: the broker saw trades we did not; ``broker_missing``: the other
way), and of a bucket both have each field that differs: prices beyond :data:`PRICE_TOLERANCE`
(both sides are exchange prices in paise, so anything more is a real difference), volume exactly,
open interest exactly where both sides carry it (a cash instrument has none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from trading_helper.models import Candle
from trading_helper.timeframes import Timeframe

PRICE_TOLERANCE = 1e-6
PRICE_FIELDS = ("open", "high", "low", "close")


@dataclass(frozen=True, slots=True)
class Difference:
    bucket: datetime
    kind: str  # live_missing, broker_missing, open, high, low, close, volume, open_interest
    live: float | None
    broker: float | None


@dataclass(slots=True)
class Comparison:
    differences: list[Difference] = field(default_factory=list)
    #: covered buckets at least one side has a candle for
    compared: int = 0
    #: broker candles outside live coverage (not compared)
    uncovered: int = 0


def _covered(bucket: datetime, captured: Sequence[tuple[datetime, datetime]]) -> bool:
    end = bucket + Timeframe.M1.width
    return any(lo <= bucket and end <= hi for lo, hi in captured)


def _fields(bucket: datetime, live: Candle, broker: Candle) -> list[Difference]:
    out = [
        Difference(bucket, name, getattr(live, name), getattr(broker, name))
        for name in PRICE_FIELDS
        if abs(getattr(live, name) - getattr(broker, name)) > PRICE_TOLERANCE
    ]
    if live.volume != broker.volume:
        out.append(Difference(bucket, "volume", live.volume, broker.volume))
    oi_live, oi_broker = live.open_interest, broker.open_interest
    if oi_live is not None and oi_broker is not None and oi_live != oi_broker:
        out.append(Difference(bucket, "open_interest", oi_live, oi_broker))
    return out


def compare(
    live: Sequence[Candle], broker: Sequence[Candle], captured: Sequence[tuple[datetime, datetime]]
) -> Comparison:
    """The differences of two 1m series (each by its bucket) over the ``captured`` ranges, in
    bucket order."""
    ours = {c.bucket: c for c in live}
    theirs = {c.bucket: c for c in broker}
    result = Comparison()
    for bucket in sorted(ours.keys() | theirs.keys()):
        if not _covered(bucket, captured):
            result.uncovered += bucket in theirs
            continue
        result.compared += 1
        mine, other = ours.get(bucket), theirs.get(bucket)
        if mine is None:
            assert other is not None
            result.differences.append(Difference(bucket, "live_missing", None, other.close))
        elif other is None:
            result.differences.append(Difference(bucket, "broker_missing", mine.close, None))
        else:
            result.differences.extend(_fields(bucket, mine, other))
    return result
