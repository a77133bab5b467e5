"""Independent computations of every study, written from the definitions with numpy and pandas
(not from the libraries the product calls), to check those against. Each follows the seeding the
product's library documents: TA-Lib seeds its exponential averages with the simple average of the
first period (MACD: both averages end their seed on the slow one's first bar), talipp seeds
SuperTrend's ATR with the first bar's high - low."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import pandas as pd

from trading_helper.indicators.studies import Bars, Study
from trading_helper.timeframes import IST

Array = npt.NDArray[np.float64]
#: how close a study must be to its independent computation
RTOL = 1e-9


def nan(n: int) -> Array:
    return np.full(n, np.nan)


def ema_seeded(x: Array, n: int, seed_end: int) -> Array:
    """EMA with alpha 2/(n+1) whose first value, at ``seed_end``, is the mean of the n values
    ending there; NaN before."""
    out = nan(len(x))
    if seed_end >= len(x) or seed_end < n - 1:
        return out
    alpha = 2.0 / (n + 1)
    value = float(np.mean(x[seed_end - n + 1 : seed_end + 1]))
    out[seed_end] = value
    for i in range(seed_end + 1, len(x)):
        value = value + alpha * (x[i] - value)
        out[i] = value
    return out


def sma(x: Array, n: int) -> Array:
    return pd.Series(x).rolling(n).mean().to_numpy()


def ema(x: Array, n: int) -> Array:
    return ema_seeded(x, n, n - 1)


def wilder(values: Array, n: int, first: int) -> Array:
    """Wilder's average: the mean of values[first-n+1 .. first] at ``first``, then (prev*(n-1)+v)/n."""
    out = nan(len(values))
    if first >= len(values):
        return out
    avg = float(np.mean(values[first - n + 1 : first + 1]))
    out[first] = avg
    for i in range(first + 1, len(values)):
        avg = (avg * (n - 1) + values[i]) / n
        out[i] = avg
    return out


def rsi(x: Array, n: int) -> Array:
    change = np.diff(x, prepend=np.nan)
    gain, loss = np.where(change > 0, change, 0.0), np.where(change < 0, -change, 0.0)
    avg_gain, avg_loss = wilder(gain, n, n), wilder(loss, n, n)
    total = avg_gain + avg_loss
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total == 0, 0.0, 100.0 * avg_gain / total)


def true_range(h: Array, low: Array, c: Array) -> Array:
    prev = np.roll(c, 1)
    tr = np.maximum.reduce([h - low, np.abs(h - prev), np.abs(low - prev)])
    tr[0] = h[0] - low[0]
    return tr


def atr(h: Array, low: Array, c: Array, n: int) -> Array:
    """TA-Lib's: true ranges from the second bar, the first ATR on bar n."""
    return wilder(true_range(h, low, c), n, n)


def macd(x: Array, fast: int, slow: int, signal: int) -> dict[str, Array]:
    line = ema_seeded(x, fast, slow - 1) - ema_seeded(x, slow, slow - 1)
    sig = nan(len(x))
    start = slow - 1
    if start < len(x):
        sig[start:] = ema_seeded(line[start:], signal, signal - 1)
    hist = line - sig
    line = np.where(np.isnan(sig), np.nan, line)
    return {"macd": line, "signal": sig, "hist": hist}


def bbands(x: Array, n: int, k: float) -> dict[str, Array]:
    rolling = pd.Series(x).rolling(n)
    mid, sd = rolling.mean().to_numpy(), rolling.std(ddof=0).to_numpy()
    return {"upper": mid + k * sd, "middle": mid, "lower": mid - k * sd}


def supertrend(h: Array, low: Array, c: Array, n: int, mult: float) -> dict[str, Array]:
    """The classic SuperTrend: final bands that only tighten while the trend holds, the line on
    the upper band in a down trend and on the lower one in an up trend. ATR as talipp seeds it
    (first bar's high - low, first ATR on bar n-1); the first ATR bar has no previous final band,
    so the first line is on the bar after it, starting from a down trend."""
    tr = true_range(h, low, c)
    a = wilder(tr, n, n - 1)
    level, direction = nan(len(c)), nan(len(c))
    fub = flb = math.nan
    down = True
    for i in range(n, len(c)):
        hl2 = (h[i] + low[i]) / 2
        bub, blb = hl2 + mult * a[i], hl2 - mult * a[i]
        first = i == n
        fub = bub if first or bub < fub or c[i - 1] > fub else fub
        flb = blb if first or blb > flb or c[i - 1] < flb else flb
        if down and c[i] > fub:
            down = False
        elif not down and c[i] < flb:
            down = True
        level[i] = fub if down else flb
        direction[i] = 1.0 if c[i] > level[i] else -1.0
    return {"supertrend": level, "direction": direction}


def ist_session(bucket: datetime) -> object:
    """An IST trading day runs 00:15 -> 00:15 (the 1d bucket)."""
    return (bucket.astimezone(IST) - timedelta(minutes=15)).date()


def vwap(times: list[datetime], h: Array, low: Array, c: Array, v: Array) -> Array:
    frame = pd.DataFrame({"pv": (h + low + c) / 3 * v, "v": v, "day": [ist_session(t) for t in times]})
    sums = frame.groupby("day", sort=False)[["pv", "v"]].cumsum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums["v"] == 0, np.nan, sums["pv"] / sums["v"])


def oi_change(oi: Array) -> Array:
    return pd.Series(oi).diff().to_numpy()


def expected(study: Study, bars: Bars) -> dict[str, Array]:
    p = study.params
    n = int(p[0]) if p else 0
    name = study.kind.name
    if name == "sma":
        return {"sma": sma(bars.close, n)}
    if name == "ema":
        return {"ema": ema(bars.close, n)}
    if name == "rsi":
        return {"rsi": rsi(bars.close, n)}
    if name == "macd":
        return macd(bars.close, n, int(p[1]), int(p[2]))
    if name == "bb":
        return bbands(bars.close, n, p[1])
    if name == "atr":
        return {"atr": atr(bars.high, bars.low, bars.close, n)}
    if name == "supertrend":
        return supertrend(bars.high, bars.low, bars.close, n, p[1])
    if name == "vwap":
        return {"vwap": vwap(list(bars.time), bars.high, bars.low, bars.close, bars.volume)}
    if name == "oi":
        return {"oi": bars.oi, "change": oi_change(bars.oi)}
    assert name == "volume"
    return {"volume": bars.volume}


def assert_same(got: Array, want: Array, what: str) -> None:
    assert got.shape == want.shape, what
    defined = ~np.isnan(want)
    assert (np.isnan(got) == ~defined).all(), (
        f"{what}: undefined at {np.flatnonzero(np.isnan(got) != ~defined)[:5]}"
    )
    assert defined.any(), f"{what}: no value at all"
    rel = np.abs(got[defined] - want[defined]) / np.maximum(np.abs(want[defined]), 1e-300)
    assert rel.max() <= RTOL, f"{what}: relative difference {rel.max():.3g} at {np.argmax(rel)}"
