"""``trading-helper bench indicators``: what each study costs, over closed bars and bar by bar.

Pure computation on a seeded random 1m series (no database): per study, the batch computation over
``bars`` bars (what ``GET /api/indicators`` runs per request, warm-up included), and the
incremental updater's cost per closed bar and per forming-bar call (what a live consumer pays per
candle update). The reference, measured in the same run, is turning the candle models into arrays
(``Bars.of``), which every request does once: a study's ``x_reference`` is its cost in those units.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from trading_helper.indicators.incremental import StudyUpdater
from trading_helper.indicators.studies import Bars, parse_studies
from trading_helper.models import Candle
from trading_helper.timeframes import IST, Timeframe

STUDIES = "sma:20,ema:20,rsi:14,macd:12:26:9,bb:20:2,atr:14,supertrend:10:3,vwap,oi,volume"


def random_series(bars: int, seed: int = 1) -> list[Candle]:
    """A random walk of 1m candles, 375 a session (the weekends left out: costs do not see them)."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 5, 9, 15, tzinfo=IST)
    out, price, oi = [], 1000.0, 100_000
    for i in range(bars):
        day, minute = divmod(i, 375)
        t = start + timedelta(days=day, minutes=minute)
        close = max(1.0, price * (1 + rng.gauss(0, 0.001)))
        high, low = (
            max(price, close) * (1 + rng.random() * 1e-3),
            min(price, close) * (1 - rng.random() * 1e-3),
        )
        oi += rng.randint(-300, 300)
        out.append(Candle(t, price, high, low, close, rng.randint(0, 5000), oi, timeframe=Timeframe.M1))
        price = close
    return out


def _best_ms(repeat: int, call: Callable[[], object]) -> float:
    """The fastest of ``repeat`` runs, in milliseconds (the least disturbed by other load)."""
    best = math.inf
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - began)
    return best * 1000


def run_indicators_bench(
    *, bars: int, repeat: int, progress: Callable[[str, float], None] | None = None
) -> dict[str, Any]:
    candles = random_series(bars)
    reference_ms = _best_ms(repeat, lambda: Bars.of(candles, Timeframe.M1))
    series = Bars.of(candles, Timeframe.M1)
    studies = parse_studies(STUDIES)
    history, live = candles[: bars // 2], candles[bars // 2 :]
    out: dict[str, Any] = {}
    for n, study in enumerate(studies):
        if progress is not None:
            progress(f"{study.spec}", n / len(studies))
        batch_ms = _best_ms(repeat, partial(study.compute, series))
        updater = StudyUpdater(study, history)
        began = time.perf_counter()
        for candle in live:
            updater.forming(candle)
        forming_us = (time.perf_counter() - began) / len(live) * 1e6
        began = time.perf_counter()
        for candle in live:
            updater.close(candle)
        close_us = (time.perf_counter() - began) / len(live) * 1e6
        out[study.spec] = {
            "batch_ms": round(batch_ms, 3),
            "batch_x_reference": round(batch_ms / reference_ms, 3),
            "close_us_per_bar": round(close_us, 2),
            "forming_us_per_call": round(forming_us, 2),
        }
    return {
        "bench": "indicators",
        "bars": bars,
        "repeat": repeat,
        "reference": {"what": "Bars.of(candles): candle models to arrays", "ms": round(reference_ms, 3)},
        "studies": out,
    }
