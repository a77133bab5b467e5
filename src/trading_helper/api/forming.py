"""Forming candles built from the ticks the WebSocket hub relays (the ``candle`` messages).

They move the chart's last candle between two REST reads. Volume counts the increments of the
cumulative day volume seen by this process since the bucket's first relayed tick, so it can be
lower than the stored candle's when the process started mid-bucket; the REST read is the record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from trading_helper.models import Tick
from trading_helper.timeframes import IST, Timeframe


@dataclass(slots=True)
class Forming:
    bucket: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    open_interest: int | None

    def to_json(self, instrument_id: int) -> dict[str, object]:
        return {"instrument_id": instrument_id, "time": self.bucket.astimezone(IST).isoformat(),
                "open": self.open, "high": self.high, "low": self.low, "close": self.close,
                "volume": self.volume, "open_interest": self.open_interest}


class FormingCandles:
    def __init__(self) -> None:
        self._candles: dict[tuple[int, Timeframe], Forming] = {}
        self._day_volume: dict[int, int] = {}

    def _increment(self, tick: Tick) -> int:
        if tick.volume is None:
            return 0
        previous = self._day_volume.get(tick.instrument_id)
        self._day_volume[tick.instrument_id] = tick.volume
        if previous is None or tick.volume < previous:  # first sight, or a new day's count
            return 0
        return tick.volume - previous

    def update(self, tick: Tick, timeframes: Iterable[Timeframe]) -> list[tuple[Timeframe, Forming]]:
        """Fold ``tick`` into its buckets; the candles it changed (a late tick for a closed bucket
        changes nothing)."""
        traded = self._increment(tick)
        price = tick.last_price
        changed: list[tuple[Timeframe, Forming]] = []
        for tf in timeframes:
            bucket = tf.bucket_start(tick.exchange_ts)
            key = (tick.instrument_id, tf)
            candle = self._candles.get(key)
            if candle is None or bucket > candle.bucket:
                candle = Forming(bucket, price, price, price, price, traded, tick.open_interest)
                self._candles[key] = candle
            elif bucket == candle.bucket:
                candle.high = max(candle.high, price)
                candle.low = min(candle.low, price)
                candle.close = price
                candle.volume += traded
                if tick.open_interest is not None:
                    candle.open_interest = tick.open_interest
            else:
                continue
            changed.append((tf, candle))
        return changed

    def forget(self, instrument_id: int) -> None:
        for key in [k for k in self._candles if k[0] == instrument_id]:
            del self._candles[key]
        self._day_volume.pop(instrument_id, None)
