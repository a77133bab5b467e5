"""A study carried forward bar by bar: closed bars in, the forming bar's value on demand.

:class:`StudyUpdater` is what a live consumer (the alerts, a chart feed) keeps per instrument,
timeframe and study: open it on the closed history, call :meth:`~StudyUpdater.close` with each bar
as it closes and :meth:`~StudyUpdater.forming` as often as the forming bar changes. A forming
value commits nothing, and once the bar closes :meth:`~StudyUpdater.close` gives the value
:meth:`Study.compute` gives for that bar over the same series (``tests/indicators`` checks both).

The TA-Lib studies use TA-Lib's own streaming handles (``talib.stream``: O(1) per bar, ``peek``
for the forming bar, bit-identical to the batch functions); until a handle can open (its
lookback and seeding need a few bars), the batch function runs over the few bars there are.
SuperTrend and VWAP keep their talipp indicator and add, then remove, the forming bar.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
import talib
from talib import stream
from talipp.indicators import VWAP, SuperTrend
from talipp.ohlcv import OHLCV

from trading_helper.indicators.studies import (
    Bars,
    Study,
    session_of,
    supertrend_values,
    talib_args,
    vwap_value,
)
from trading_helper.models import Candle

Values = dict[str, float]
#: raised by a streaming handle opened on too few bars (exported by talib, missing from its stubs)
INSUFFICIENT_HISTORY: type[Exception] = talib.InsufficientHistory  # type: ignore[attr-defined,unused-ignore]

#: a talipp indicator keeps every input; past this many it drops the oldest half (its next values
#: depend only on the last few, so nothing it reports changes)
TALIPP_KEEP = 4096


class _Engine(Protocol):
    def close(self, candle: Candle) -> tuple[float, ...]: ...
    def forming(self, candle: Candle) -> tuple[float, ...]: ...


def _bar(candle: Candle) -> OHLCV:
    return OHLCV(candle.open, candle.high, candle.low, candle.close, float(candle.volume))


def _floats(result: Any) -> tuple[float, ...]:
    values = result if isinstance(result, tuple) else (result,)
    return tuple(math.nan if v is None else float(v) for v in values)


class _TalibEngine:
    def __init__(self, study: Study) -> None:
        assert study.kind.talib_name is not None
        self.name = study.kind.talib_name
        self.args = talib_args(self.name, study.params)
        self.handle: Any = None
        self.pending: list[tuple[float, ...]] = []

    def _inputs(self, candle: Candle) -> tuple[float, ...]:
        if self.name == "ATR":
            return (candle.high, candle.low, candle.close)
        return (candle.close,)

    def _batch_last(self, rows: list[tuple[float, ...]]) -> tuple[float, ...]:
        columns = [np.asarray(col, dtype=np.float64) for col in zip(*rows, strict=True)]
        result = getattr(talib, self.name)(*columns, **self.args)
        arrays = result if isinstance(result, tuple) else (result,)
        return tuple(float(a[-1]) for a in arrays)

    def close(self, candle: Candle) -> tuple[float, ...]:
        row = self._inputs(candle)
        if self.handle is not None:
            return _floats(self.handle.update(*row))
        self.pending.append(row)
        columns = [np.asarray(col, dtype=np.float64) for col in zip(*self.pending, strict=True)]
        try:
            self.handle = getattr(stream, self.name)(*columns, **self.args)
        except INSUFFICIENT_HISTORY:
            return self._batch_last(self.pending)
        self.pending = []
        return _floats(self.handle.value)

    def forming(self, candle: Candle) -> tuple[float, ...]:
        row = self._inputs(candle)
        if self.handle is not None:
            return _floats(self.handle.peek(*row))
        return self._batch_last([*self.pending, row])


class _SuperTrendEngine:
    def __init__(self, study: Study) -> None:
        self.indicator = SuperTrend(int(study.params[0]), study.params[1])

    def close(self, candle: Candle) -> tuple[float, ...]:
        self.indicator.add(_bar(candle))
        if len(self.indicator.input_values) > TALIPP_KEEP:
            self.indicator.purge_oldest(TALIPP_KEEP // 2)
        return supertrend_values(self.indicator[-1])

    def forming(self, candle: Candle) -> tuple[float, ...]:
        self.indicator.add(_bar(candle))
        try:
            return supertrend_values(self.indicator[-1])
        finally:
            self.indicator.remove()


class _VwapEngine:
    """One talipp VWAP per IST session (``studies.session_of``); bars come in time order."""

    def __init__(self, study: Study) -> None:
        self.session_end: datetime | None = None
        self.indicator = VWAP()

    def _new_session(self, candle: Candle) -> bool:
        return self.session_end is None or candle.bucket >= self.session_end

    def close(self, candle: Candle) -> tuple[float, ...]:
        if self._new_session(candle):
            self.session_end, self.indicator = session_of(candle.bucket) + timedelta(days=1), VWAP()
        self.indicator.add(_bar(candle))
        if len(self.indicator.input_values) > TALIPP_KEEP:
            self.indicator.purge_oldest(TALIPP_KEEP // 2)
        return (vwap_value(self.indicator[-1]),)

    def forming(self, candle: Candle) -> tuple[float, ...]:
        indicator = VWAP() if self._new_session(candle) else self.indicator
        indicator.add(_bar(candle))
        try:
            return (vwap_value(indicator[-1]),)
        finally:
            indicator.remove()


def _oi_of(candle: Candle) -> float:
    return math.nan if candle.open_interest is None else float(candle.open_interest)


class _OiEngine:
    def __init__(self, study: Study) -> None:
        self.last: float | None = None

    def forming(self, candle: Candle) -> tuple[float, ...]:
        oi = _oi_of(candle)
        return oi, math.nan if self.last is None else oi - self.last

    def close(self, candle: Candle) -> tuple[float, ...]:
        values = self.forming(candle)
        self.last = _oi_of(candle)
        return values


class _VolumeEngine:
    def __init__(self, study: Study) -> None:
        pass

    def forming(self, candle: Candle) -> tuple[float, ...]:
        return (float(candle.volume),)

    close = forming


_ENGINES: dict[str, type[_SuperTrendEngine | _VwapEngine | _OiEngine | _VolumeEngine]] = {
    "supertrend": _SuperTrendEngine,
    "vwap": _VwapEngine,
    "oi": _OiEngine,
    "volume": _VolumeEngine,
}


class StudyUpdater:
    """One study over one series, carried forward. ``history``: the closed candles so far, oldest
    first (as many as the study's warm-up at least, for a right first value)."""

    def __init__(self, study: Study, history: Iterable[Candle] = ()) -> None:
        self.study = study
        kind = study.kind
        self._engine: _Engine = _TalibEngine(study) if kind.talib_name else _ENGINES[kind.name](study)
        self.last: Values = dict.fromkeys(kind.outputs, math.nan)
        for candle in history:
            self.close(candle)

    def _values(self, values: tuple[float, ...]) -> Values:
        return dict(zip(self.study.kind.outputs, values, strict=True))

    def close(self, candle: Candle) -> Values:
        """A bar closed: its values (kept as :attr:`last`)."""
        self.last = self._values(self._engine.close(candle))
        return self.last

    def forming(self, candle: Candle) -> Values:
        """The values with ``candle`` as the forming bar; nothing is kept."""
        return self._values(self._engine.forming(candle))


def compute_last(study: Study, bars: Bars) -> Values:
    """The batch computation's values at the last bar (what :meth:`StudyUpdater.close` equals)."""
    return {name: float(values[-1]) for name, values in study.compute(bars).items()}
