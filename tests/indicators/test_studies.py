"""Every study against an independent computation (tests/indicators/reference.py) on random
series, warm-up included; the forming bar's value against the closed-bar computation; specs."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta

import numpy as np
import pytest

from tests.indicators.reference import RTOL, assert_same, expected
from trading_helper.errors import InvalidStudy
from trading_helper.indicators.incremental import TALIPP_KEEP, StudyUpdater, compute_last
from trading_helper.indicators.studies import Bars, parse_studies, parse_study
from trading_helper.models import Candle
from trading_helper.timeframes import IST, Timeframe

ALL = "sma:20,ema:20,ema:5,rsi:14,macd:12:26:9,macd:5:35:5,bb:20:2,bb:10:1.5,atr:14,supertrend:10:3,supertrend:7:2.5,vwap,oi,volume"


def session_buckets(tf: Timeframe, n: int) -> list[datetime]:
    """``n`` buckets of NSE sessions (09:15-15:30 IST on weekdays; a 1d bucket starts 00:15 IST)."""
    out: list[datetime] = []
    day = date(2026, 1, 5)
    while len(out) < n:
        if day.weekday() < 5:
            if tf is Timeframe.D1:
                out.append(datetime.combine(day, time(0, 15), IST))
            else:
                t, close = datetime.combine(day, time(9, 15), IST), datetime.combine(day, time(15, 30), IST)
                while t < close and len(out) < n:
                    out.append(t)
                    t += tf.width
        day += timedelta(days=1)
    return out


def random_candles(seed: int, n: int, tf: Timeframe = Timeframe.M5) -> list[Candle]:
    """A random walk over NSE sessions, random volumes (zeros included) and open interest."""
    rng = np.random.default_rng(seed)
    out: list[Candle] = []
    price, oi = 100 + 900 * rng.random(), 50_000
    for t in session_buckets(tf, n):
        o, c = price, max(1.0, price * (1 + 0.002 * rng.normal()))
        h, low = max(o, c) + price * 0.001 * rng.random(), min(o, c) - price * 0.001 * rng.random()
        volume = int(rng.integers(0, 3)) * int(rng.integers(0, 5000))
        oi += int(rng.integers(-500, 500))
        out.append(Candle(t, o, h, low, c, volume, oi, "broker", timeframe=tf))
        price = c
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tf", [Timeframe.M1, Timeframe.M15, Timeframe.D1])
def test_every_study_equals_an_independent_computation(seed: int, tf: Timeframe) -> None:
    candles = random_candles(seed, 600 + 97 * seed, tf)
    bars = Bars.of(candles, tf)
    for study in parse_studies(ALL):
        want = expected(study, bars)
        got = study.compute(bars)
        assert set(got) == set(want) == set(study.kind.outputs)
        for name in want:
            assert_same(got[name], want[name], f"{study.spec}.{name} seed {seed} {tf}")


@pytest.mark.parametrize("seed", range(4))
def test_the_warmup_makes_the_first_value_in_range_right(seed: int) -> None:
    """The value at ``from`` computed over just the warm-up is the value over all the history
    (within 1e-9 relative: the seed's weight is below e^-20 after the warm-up)."""
    tf = Timeframe.M5
    candles = random_candles(100 + seed, 4000, tf)
    start = 3500
    for study in parse_studies(ALL):
        need = study.warmup(tf)
        full = study.compute(Bars.of(candles, tf))
        short = study.compute(Bars.of(candles[start - need :], tf))
        for name in full:
            want, got = full[name][start], short[name][need]
            assert not math.isnan(got), f"{study.spec}.{name} undefined at from"
            assert got == pytest.approx(want, rel=RTOL, abs=1e-12), f"{study.spec}.{name}"


@pytest.mark.parametrize("seed", range(3))
def test_the_forming_bar_agrees_with_the_closed_computation(seed: int) -> None:
    """Each bar is revised a few times while forming (as ticks move it); once it closes, the
    updater's value, its last forming value and the batch computation over the series are one."""
    tf = Timeframe.M1
    candles = random_candles(200 + seed, 900, tf)
    rng = np.random.default_rng(seed)
    for study in parse_studies(ALL):
        updater = StudyUpdater(study, candles[:400])
        # the batch computation is causal: its value at bar i over the whole series is its value
        # over the series up to bar i (checked on every 50th bar below)
        batch = study.compute(Bars.of(candles, tf))
        for i in range(400, len(candles)):
            final = candles[i]
            for _ in range(3):  # earlier states of the forming bar
                partial = Candle(
                    final.bucket,
                    final.open,
                    final.high,
                    final.low,
                    final.open + (final.close - final.open) * rng.random(),
                    final.volume // 2,
                    final.open_interest,
                    "partial",
                    timeframe=tf,
                )
                updater.forming(partial)
            forming = updater.forming(final)
            closed = updater.close(final)
            if i % 50 == 0:
                assert compute_last(study, Bars.of(candles[: i + 1], tf)) == pytest.approx(
                    {name: values[i] for name, values in batch.items()}, rel=0, abs=0, nan_ok=True
                )
            for name in closed:
                same = [forming[name], closed[name], float(batch[name][i])]
                assert all(math.isnan(v) for v in same) or same[0] == same[1] == same[2], (
                    f"{study.spec}.{name} bar {i}: forming/closed/batch {same}"
                )


def test_specs_parse_with_defaults_and_aliases() -> None:
    studies = parse_studies(" ema:20 , RSI, macd , bollinger:20:2.5,supertrend:10:3,vwap,ema:20")
    assert [s.spec for s in studies] == [
        "ema:20",
        "rsi:14",
        "macd:12:26:9",
        "bb:20:2.5",
        "supertrend:10:3",
        "vwap",
    ]
    assert parse_study("st").params == (10, 3.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("foo:3", "unknown study 'foo'"),
        ("ema:0", "ema:0: period must be between 1 and 500"),
        ("ema:x", "period must be an integer"),
        ("ema:20.5", "period must be an integer"),
        ("ema:20:3", "ema takes period"),
        ("vwap:3", "vwap takes no parameters"),
        ("macd:26:12", "fast period must be shorter"),
        ("bb:20:nan", "stddev must be between"),
        ("", "no study given"),
        (",".join(f"ema:{n}" for n in range(1, 18)), "at most 16 studies"),
    ],
)
def test_a_bad_spec_is_a_specific_error(spec: str, message: str) -> None:
    with pytest.raises(InvalidStudy, match=message) as caught:
        parse_studies(spec)
    assert caught.value.code == "invalid_study"


def test_the_talipp_updaters_drop_old_inputs_without_changing_a_value() -> None:
    """Past ``TALIPP_KEEP`` inputs the talipp indicators drop their oldest half: every value
    still equals the batch computation over the whole series."""
    tf = Timeframe.M1
    candles = random_candles(300, 2 * TALIPP_KEEP + 500, tf)
    for study in parse_studies("supertrend:10:3,vwap"):
        batch = study.compute(Bars.of(candles, tf))
        updater = StudyUpdater(study)
        for i, candle in enumerate(candles):
            closed = updater.close(candle)
            for name, value in closed.items():
                want = float(batch[name][i])
                assert value == want or (math.isnan(value) and math.isnan(want)), (
                    f"{study.spec}.{name} bar {i}"
                )
        assert len(updater._engine.indicator.input_values) <= TALIPP_KEEP  # type: ignore[attr-defined]
