"""Forming candles built from the ticks the WebSocket hub relays (the ``candle`` messages).

They move the chart's last candle between two REST reads, by the same rules as the stored
candles, taken from the one place they live (:class:`~trading_helper.ingest.volume.VolumeTracker`):
a tick belongs to the time of its trade (``trade_ts``, else the exchange time), an update that
carries no new trade opens or moves nothing, and volume is the increment of the cumulative day
volume. This process only sees what it relayed, so the volume can be lower than the stored
candle's when it started following mid-bucket; the REST read is the record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from trading_helper.ingest.volume import NO_TRADE, VolumeTracker, from_us, to_us
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
        self._volume = VolumeTracker()

    def update(self, tick: Tick, timeframes: Iterable[Timeframe]) -> list[tuple[Timeframe, Forming]]:
        """Fold ``tick`` into its buckets; the candles it changed (a late tick for a closed bucket,
        or an update with no new trade, changes nothing)."""
        trade_us = to_us(tick.trade_ts) if tick.trade_ts is not None else -1
        at_us, traded = self._volume.apply(tick.instrument_id, to_us(tick.exchange_ts), trade_us,
                                           tick.volume, tick.last_quantity)
        if at_us == NO_TRADE:
            return []
        at = from_us(at_us)
        price = tick.last_price
        changed: list[tuple[Timeframe, Forming]] = []
        for tf in timeframes:
            bucket = tf.bucket_start(at)
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
        self._volume.forget(instrument_id)
