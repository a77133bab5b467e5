"""Studies (indicators) over a candle series: parse a spec such as ``ema:20``, compute it.

Libraries, and why (checked 2026-12 on this machine):

- **TA-Lib** (``ta-lib`` 0.8, binary wheels) computes SMA, EMA, RSI, MACD, Bollinger bands and
  ATR over closed bars in C, and its streaming API (``talib.stream``: open on history, ``update``
  one closed bar, ``peek`` a forming one) gives values bit-identical to the batch functions. So
  one library serves both the closed bars and the forming bar (``indicators/incremental.py``).
  ``talipp`` was the other candidate for the forming bar, but it seeds MACD and ATR differently
  from TA-Lib (measured on one random series: MACD 36 %, ATR 1 % relative apart), so a forming
  value from talipp would not equal TA-Lib's value once the bar closes; it is also ~2,000x slower.
- **talipp** (2.7, maintained, incremental) for what TA-Lib lacks: SuperTrend and VWAP. Its VWAP
  is anchored at its first input: one instance per IST session gives the session-anchored VWAP.
- **OI change** and **volume** are the candles' own columns (a difference of consecutive open
  interest): no formula a library would add.

Each study's warm-up (the bars read before ``from``) is enough that the first value in range is
defined and, for the recursive ones, that the seed's weight has decayed below about e^-20 (2e-9).
SuperTrend also carries a trend state along its path: two runs started at different bars agree once
both have crossed a band, which its warm-up of 21 ATR periods covered on every random series tested
(``tests/indicators``), but a series that never crosses could in principle keep them apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import talib
from talipp.indicators import VWAP, SuperTrend
from talipp.ohlcv import OHLCV

from trading_helper.candles.calendar import CALENDARS
from trading_helper.errors import InvalidStudy
from trading_helper.models import Candle
from trading_helper.timeframes import Timeframe

Array = npt.NDArray[np.float64]
#: where the chart draws a study: on the price scale, or in a pane of its own
Placement = Literal["overlay", "pane"]

#: most studies one request may ask for
MAX_STUDIES: Final = 16
#: the longest period a study accepts (its warm-up is up to ~21x this many bars)
MAX_PERIOD: Final = 500


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: type[int] | type[float]
    default: float
    low: float
    high: float

    def parse(self, study: str, text: str) -> float:
        what = "an integer" if self.kind is int else "a number"
        bounds = f"{self.low:g} and {self.high:g}"
        try:
            value = float(int(text)) if self.kind is int else float(text)
        except ValueError:
            raise InvalidStudy(
                f"{study}: {self.name} must be {what} between {bounds}, got {text!r}", reference=study
            ) from None
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise InvalidStudy(
                f"{study}: {self.name} must be between {bounds}, got {text!r}", reference=study
            )
        return value


@dataclass(frozen=True, slots=True)
class Bars:
    """A candle series as arrays (float64; open interest NaN where a candle has none)."""

    time: tuple[datetime, ...]
    open: Array
    high: Array
    low: Array
    close: Array
    volume: Array
    oi: Array
    timeframe: Timeframe

    @classmethod
    def of(cls, candles: Sequence[Candle], timeframe: Timeframe) -> Bars:
        def col(values: list[float]) -> Array:
            return np.asarray(values, dtype=np.float64)

        return cls(
            tuple(c.bucket for c in candles),
            col([c.open for c in candles]),
            col([c.high for c in candles]),
            col([c.low for c in candles]),
            col([c.close for c in candles]),
            col([float(c.volume) for c in candles]),
            col([math.nan if c.open_interest is None else float(c.open_interest) for c in candles]),
            timeframe,
        )

    def __len__(self) -> int:
        return len(self.time)


def session_of(bucket: datetime) -> datetime:
    """The IST session (trading day) a bucket belongs to: its 1d bucket (00:15 -> 00:15 IST)."""
    return Timeframe.D1.bucket_start(bucket)


def ohlcv(bars: Bars, i: int) -> OHLCV:
    return OHLCV(bars.open[i], bars.high[i], bars.low[i], bars.close[i], bars.volume[i])


Compute = Callable[[Bars, tuple[float, ...]], dict[str, Array]]


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of study: its parameters, outputs, placement, warm-up and computation."""

    name: str
    params: tuple[Param, ...]
    outputs: tuple[str, ...]
    placement: Placement
    #: bars needed before the first value in range, given the parameters and the timeframe
    warmup: Callable[[tuple[float, ...], Timeframe], int]
    compute: Compute
    #: the TA-Lib function it calls (and the streaming handle the incremental updater opens)
    talib_name: str | None = None


def _n(p: tuple[float, ...], i: int = 0) -> int:
    return int(p[i])


def _talib_inputs(name: str, bars: Bars) -> list[Array]:
    return [bars.high, bars.low, bars.close] if name == "ATR" else [bars.close]


def talib_args(name: str, p: tuple[float, ...]) -> dict[str, Any]:
    """The keyword arguments of TA-Lib's function ``name`` for the study parameters ``p``."""
    if name == "MACD":
        return {"fastperiod": _n(p, 0), "slowperiod": _n(p, 1), "signalperiod": _n(p, 2)}
    if name == "BBANDS":
        return {"timeperiod": _n(p), "nbdevup": p[1], "nbdevdn": p[1], "matype": 0}
    return {"timeperiod": _n(p)}


def _by_talib(name: str, outputs: tuple[str, ...]) -> Compute:
    def compute(bars: Bars, p: tuple[float, ...]) -> dict[str, Array]:
        fn = getattr(talib, name)
        result = fn(*_talib_inputs(name, bars), **talib_args(name, p)) if len(bars) else None
        if result is None:
            return {o: np.empty(0) for o in outputs}
        arrays = result if isinstance(result, tuple) else (result,)
        return {o: np.asarray(a, dtype=np.float64) for o, a in zip(outputs, arrays, strict=True)}

    return compute


def supertrend_values(value: Any) -> tuple[float, float]:
    """A talipp ``SuperTrendVal`` -> (level, direction +1 up / -1 down); NaN when not yet defined.
    talipp emits a placeholder level of 0 on its first bar (no previous final band yet): that is
    no value."""
    if value is None or value.value is None or value.value == 0:
        return math.nan, math.nan
    return float(value.value), 1.0 if value.trend.name == "UP" else -1.0


def _supertrend(bars: Bars, p: tuple[float, ...]) -> dict[str, Array]:
    level, direction = np.full(len(bars), np.nan), np.full(len(bars), np.nan)
    st = SuperTrend(_n(p), p[1])
    for i in range(len(bars)):
        st.add(ohlcv(bars, i))
        level[i], direction[i] = supertrend_values(st[-1])
    return {"supertrend": level, "direction": direction}


def vwap_value(value: Any) -> float:
    return math.nan if value is None else float(value)


def _vwap(bars: Bars, p: tuple[float, ...]) -> dict[str, Array]:
    out = np.full(len(bars), np.nan)
    session_end: datetime | None = None
    vwap = VWAP()
    for i, bucket in enumerate(bars.time):  # in time order: a session ends a day after it starts
        if session_end is None or bucket >= session_end:
            session_end, vwap = session_of(bucket) + timedelta(days=1), VWAP()
        vwap.add(ohlcv(bars, i))
        out[i] = vwap_value(vwap[-1])
    return {"vwap": out}


def _oi(bars: Bars, p: tuple[float, ...]) -> dict[str, Array]:
    change = np.full(len(bars), np.nan)
    change[1:] = bars.oi[1:] - bars.oi[:-1]
    return {"oi": bars.oi.copy(), "change": change}


def _volume(bars: Bars, p: tuple[float, ...]) -> dict[str, Array]:
    return {"volume": bars.volume.copy()}


#: the seed's weight left after this many bars of an exponential average with factor 1 - alpha is
#: (1 - alpha)^k; 10 periods of an EMA (alpha 2/(n+1)) or 20 of Wilder's (alpha 1/n) is ~e^-20
_EMA_DECAY, _WILDER_DECAY = 10, 20


#: the longest exchange session (MCX, 09:00-23:55 IST; NSE's and BSE's, from the package, are shorter)
LONGEST_SESSION: Final = max(
    datetime.combine(date.min, spec.hours[1]) - datetime.combine(date.min, spec.hours[0])
    for spec in CALENDARS.values()
    if spec.hours is not None
)


def _session_bars(tf: Timeframe) -> int:
    """Bars of the longest session: the VWAP of the first bar in range needs its session's start."""
    return 0 if tf is Timeframe.D1 else math.ceil(LONGEST_SESSION / tf.width)


_PERIOD = Param("period", int, 20, 1, MAX_PERIOD)
_WILDER = Param("period", int, 14, 2, MAX_PERIOD)

KINDS: Final[dict[str, Kind]] = {
    k.name: k
    for k in (
        Kind(
            "sma",
            (_PERIOD,),
            ("sma",),
            "overlay",
            lambda p, tf: _n(p) - 1,
            _by_talib("SMA", ("sma",)),
            "SMA",
        ),
        Kind(
            "ema",
            (_PERIOD,),
            ("ema",),
            "overlay",
            lambda p, tf: _n(p) - 1 + _EMA_DECAY * _n(p),
            _by_talib("EMA", ("ema",)),
            "EMA",
        ),
        Kind(
            "rsi",
            (_WILDER,),
            ("rsi",),
            "pane",
            lambda p, tf: _n(p) + _WILDER_DECAY * _n(p),
            _by_talib("RSI", ("rsi",)),
            "RSI",
        ),
        Kind(
            "macd",
            (
                Param("fast", int, 12, 2, MAX_PERIOD),
                Param("slow", int, 26, 2, MAX_PERIOD),
                Param("signal", int, 9, 1, MAX_PERIOD),
            ),
            ("macd", "signal", "hist"),
            "pane",
            lambda p, tf: (_n(p, 1) + _n(p, 2) - 2) + _EMA_DECAY * (_n(p, 1) + _n(p, 2)),
            _by_talib("MACD", ("macd", "signal", "hist")),
            "MACD",
        ),
        Kind(
            "bb",
            (Param("period", int, 20, 2, MAX_PERIOD), Param("stddev", float, 2.0, 0.1, 10.0)),
            ("upper", "middle", "lower"),
            "overlay",
            lambda p, tf: _n(p) - 1,
            _by_talib("BBANDS", ("upper", "middle", "lower")),
            "BBANDS",
        ),
        Kind(
            "atr",
            (_WILDER,),
            ("atr",),
            "pane",
            lambda p, tf: _n(p) + _WILDER_DECAY * _n(p),
            _by_talib("ATR", ("atr",)),
            "ATR",
        ),
        Kind(
            "supertrend",
            (Param("period", int, 10, 1, MAX_PERIOD), Param("multiplier", float, 3.0, 0.1, 100.0)),
            ("supertrend", "direction"),
            "overlay",
            lambda p, tf: _n(p) + _WILDER_DECAY * _n(p),
            _supertrend,
        ),
        Kind("vwap", (), ("vwap",), "overlay", lambda p, tf: _session_bars(tf), _vwap),
        Kind("oi", (), ("oi", "change"), "pane", lambda p, tf: 1, _oi),
        Kind("volume", (), ("volume",), "pane", lambda p, tf: 0, _volume),
    )
}
_ALIASES: Final = {"bollinger": "bb", "bbands": "bb", "st": "supertrend", "vol": "volume", "oi_change": "oi"}
#: the grammar of one spec, for the OpenAPI pattern (the ranges are checked by :func:`parse_study`)
SPEC_PATTERN: Final = r"[A-Za-z_]+(:[0-9.]+)*"
STUDIES_PATTERN: Final = rf"^\s*{SPEC_PATTERN}(\s*,\s*{SPEC_PATTERN})*\s*$"


@dataclass(frozen=True, slots=True)
class Study:
    """A parsed study: its kind and every parameter (defaults filled in)."""

    kind: Kind
    params: tuple[float, ...]

    @property
    def spec(self) -> str:
        """The canonical spec (``macd:12:26:9``, ``bb:20:2``, ``vwap``)."""
        parts = [self.kind.name]
        for param, value in zip(self.kind.params, self.params, strict=True):
            parts.append(str(int(value)) if param.kind is int else f"{value:g}")
        return ":".join(parts)

    def warmup(self, timeframe: Timeframe) -> int:
        return self.kind.warmup(self.params, timeframe)

    def compute(self, bars: Bars) -> dict[str, Array]:
        """Every output over ``bars``, aligned to them (NaN where not defined)."""
        return self.kind.compute(bars, self.params)


_SPLIT = re.compile(r"\s*,\s*")


def parse_study(text: str) -> Study:
    """``ema:20`` -> a :class:`Study`; a clear :class:`InvalidStudy` for anything else."""
    spec = text.strip()
    name, *raw = spec.split(":")
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    kind = KINDS.get(key)
    if kind is None:
        raise InvalidStudy(
            f"unknown study {name!r}: use one of {', '.join(KINDS)} (e.g. ema:20, supertrend:10:3, vwap)",
            reference=spec,
        )
    if len(raw) > len(kind.params):
        takes = ":".join(p.name for p in kind.params) or "no parameters"
        raise InvalidStudy(f"{spec}: {key} takes {takes}", reference=spec)
    values = [p.parse(spec, r.strip()) for p, r in zip(kind.params, raw, strict=False)]
    values += [p.default for p in kind.params[len(values) :]]
    if key == "macd" and values[0] >= values[1]:
        raise InvalidStudy(f"{spec}: the fast period must be shorter than the slow one", reference=spec)
    return Study(kind, tuple(values))


def parse_studies(text: str) -> list[Study]:
    """``ema:20,rsi:14,vwap`` -> studies in order, repeats dropped."""
    specs = [s for s in _SPLIT.split(text.strip()) if s]
    if not specs:
        raise InvalidStudy("no study given: e.g. studies=ema:20,rsi:14,vwap")
    studies: dict[str, Study] = {}
    for spec in specs:
        study = parse_study(spec)
        studies.setdefault(study.spec, study)
    if len(studies) > MAX_STUDIES:
        raise InvalidStudy(f"at most {MAX_STUDIES} studies per request, got {len(studies)}")
    return list(studies.values())
