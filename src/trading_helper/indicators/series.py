"""Studies over a requested range, with the warm-up read before it.

The warm-up is counted in bars (each study says how many it needs, ``Study.warmup``), but the
candle service reads time ranges: the range before ``from`` that should hold that many bars is
estimated from the shortest session of the calendars (NSE's 6 h 15 min, so it is too wide rather
than too narrow for MCX or CDS), then read through the same service as the range itself, so its
holes are fetched from the broker's history like any other. Exactly the last ``need`` bars of it
are kept: the values do not depend on how much more was read. An illiquid instrument (minutes
without a trade have no candle) may leave fewer: the range is then widened, up to the
timeframe's ``max_span``, and what was found is reported (``warmup_bars`` and ``warmup_read``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from trading_helper.candles.backfill import BackfillReport
from trading_helper.candles.service import EARLIEST, CandleService, as_ist
from trading_helper.indicators.studies import Array, Bars, Study
from trading_helper.models import Candle, Instrument
from trading_helper.timeframes import Timeframe, parse_timeframe

#: the shortest exchange session (NSE, BSE: 09:15-15:30 IST)
SHORTEST_SESSION: Final = timedelta(hours=6, minutes=15)
#: calendar days per trading day (weekends), with room for holidays
_DAYS_PER_SESSION: Final = 7 / 5
_HOLIDAY_DAYS: Final = 5
#: how many times the warm-up range is widened (doubled) when it held too few bars
_WIDEN: Final = 3


def warmup_span(timeframe: Timeframe, bars: int) -> timedelta:
    """A range before ``from`` expected to hold ``bars`` bars of ``timeframe``."""
    per_session = 1 if timeframe is Timeframe.D1 else math.ceil(SHORTEST_SESSION / timeframe.width)
    sessions = math.ceil(bars / per_session)
    return timedelta(days=math.ceil(sessions * _DAYS_PER_SESSION) + _HOLIDAY_DAYS)


@dataclass(slots=True)
class StudySeries:
    study: Study
    #: each output over the requested range's candles (NaN where not defined)
    values: dict[str, Array]


@dataclass(slots=True)
class IndicatorSeries:
    instrument: Instrument
    timeframe: Timeframe
    #: the requested range's candles (the series the values are aligned to)
    candles: list[Candle]
    studies: list[StudySeries]
    #: bars wanted before ``from`` (the largest warm-up of the studies) and bars found
    warmup_bars: int
    warmup_read: int
    backfill: BackfillReport = field(default_factory=BackfillReport)


def _add(total: BackfillReport, part: BackfillReport) -> None:
    total.fetched_ranges += part.fetched_ranges
    total.broker_calls += part.broker_calls
    total.candles += part.candles
    total.error = total.error or part.error


async def _warmup(
    service: CandleService,
    instrument: Instrument,
    tf: Timeframe,
    start: datetime,
    need: int,
    report: BackfillReport,
) -> list[Candle]:
    assert instrument.id is not None
    span = warmup_span(tf, need)
    candles: list[Candle] = []
    for _ in range(_WIDEN + 1):
        span = min(span, tf.facts.max_span)
        begin = max(start - span, EARLIEST)
        if begin >= start:
            break
        series = await service.get_candles(f"id:{instrument.id}", tf, begin, start)
        _add(report, series.backfill)
        candles = series.candles
        if len(candles) >= need or span >= tf.facts.max_span or begin == EARLIEST:
            break
        span *= 2
    return candles[-need:]


async def study_series(
    service: CandleService,
    ref: str | int,
    timeframe: str | Timeframe,
    start: datetime,
    end: datetime,
    studies: Sequence[Study],
) -> IndicatorSeries:
    """``studies`` over the candles in [start, end), each value computed with its warm-up."""
    tf = parse_timeframe(timeframe)
    main = await service.get_candles(ref, tf, start, end)
    report = BackfillReport()
    _add(report, main.backfill)
    need = max((s.warmup(tf) for s in studies), default=0)
    warm = await _warmup(service, main.instrument, tf, as_ist(start), need, report) if need else []
    bars = Bars.of([*warm, *main.candles], tf)
    out = [
        StudySeries(s, {name: values[len(warm) :] for name, values in s.compute(bars).items()})
        for s in studies
    ]
    return IndicatorSeries(main.instrument, tf, main.candles, out, need, len(warm), report)
