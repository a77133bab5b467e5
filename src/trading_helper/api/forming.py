"""Forming candles built from the ticks the WebSocket hub relays (the ``candle`` messages).

They are :class:`~trading_helper.models.Candle` (``source="partial"``), the one candle model, and
move the chart's last candle between two REST reads, by the same rules as the stored
candles, taken from the one place they live (:class:`~trading_helper.ingest.volume.VolumeTracker`):
a tick belongs to the time of its trade (``trade_ts``, else the exchange time), an update that
carries no new trade opens or moves nothing, and volume is the increment of the cumulative day
volume. This process only sees what it relayed, so the volume can be lower than the stored
candle's when it started following mid-bucket; the REST read is the record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from trading_helper.ingest.volume import NO_TRADE, VolumeTracker, from_us, to_us
from trading_helper.models import Candle, Tick
from trading_helper.timeframes import Timeframe


def forming_json(candle: Candle, instrument_id: int) -> dict[str, object]:
    """The ``data`` of a ``candle`` message: the candle's wire fields (``Candle.wire``) with its
    instrument, and without ``source``: a WebSocket candle is always the forming one (``partial``),
    and the message keeps the shape it was published with."""
    wire = candle.wire()
    del wire["source"]
    return {"instrument_id": instrument_id, **wire}


class FormingCandles:
    def __init__(self) -> None:
        self._candles: dict[tuple[int, Timeframe], Candle] = {}
        self._volume = VolumeTracker()

    def update(self, tick: Tick, timeframes: Iterable[Timeframe]) -> list[tuple[Timeframe, Candle]]:
        """Fold ``tick`` into its buckets; the candles it changed (a late tick for a closed bucket,
        or an update with no new trade, changes nothing)."""
        trade_us = to_us(tick.trade_ts) if tick.trade_ts is not None else -1
        at_us, traded = self._volume.apply(
            tick.instrument_id, to_us(tick.exchange_ts), trade_us, tick.volume, tick.last_quantity
        )
        if at_us == NO_TRADE:
            return []
        at = from_us(at_us)
        price = tick.last_price
        changed: list[tuple[Timeframe, Candle]] = []
        for tf in timeframes:
            bucket = tf.bucket_start(at)
            key = (tick.instrument_id, tf)
            candle = self._candles.get(key)
            if candle is None or bucket > candle.bucket:
                candle = Candle(
                    bucket, price, price, price, price, traded, tick.open_interest, "partial", timeframe=tf
                )
            elif bucket == candle.bucket:
                candle = replace(
                    candle,
                    high=max(candle.high, price),
                    low=min(candle.low, price),
                    close=price,
                    volume=candle.volume + traded,
                    open_interest=candle.open_interest if tick.open_interest is None else tick.open_interest,
                )
            else:
                continue
            self._candles[key] = candle
            changed.append((tf, candle))
        return changed

    def forget(self, instrument_id: int) -> None:
        for key in [k for k in self._candles if k[0] == instrument_id]:
            del self._candles[key]
        self._volume.forget(instrument_id)
