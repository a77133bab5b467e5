"""Black-76 (options/black76.py) against QuantLib's, an independent C++ implementation, on random
inputs: prices, implied volatility and Greeks within 1e-6; every unsolvable quote has its reason."""

from __future__ import annotations

import math

import numpy as np
import pytest
import QuantLib as ql

from trading_helper.options import black76

RNG_SEED = 20261202


def _quantlib(flag: str, f: float, k: float, t: float, r: float, sigma: float) -> dict[str, float]:
    kind = ql.Option.Call if flag == "c" else ql.Option.Put
    df = math.exp(-r * t)
    calc = ql.BlackCalculator(ql.PlainVanillaPayoff(kind, k), f, sigma * math.sqrt(t), df)
    return {
        "price": calc.value(),
        "delta": calc.delta(f),
        "gamma": calc.gamma(f),
        # QuantLib: theta per year on the forward's discounting, vega per unit of sigma
        "theta": calc.theta(f, t) / 365.0,
        "vega": calc.vega(t) / 100.0,
    }


def _random_chain(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    forward = rng.uniform(50.0, 60000.0, n)
    return {
        "flag": rng.choice(np.array(["c", "p"]), n),
        "forward": forward,
        "strike": forward * rng.uniform(0.8, 1.2, n),
        "t": rng.uniform(1 / 365, 1.0, n),
        "sigma": rng.uniform(0.05, 0.9, n),
    }


def test_price_and_greeks_equal_quantlib_on_random_inputs() -> None:
    c = _random_chain(500, RNG_SEED)
    rate = 0.10
    ours = black76.price(c["flag"], c["forward"], c["strike"], c["t"], rate, c["sigma"])
    g = black76.greeks(c["flag"], c["forward"], c["strike"], c["t"], rate, c["sigma"])
    for i in range(500):
        ref = _quantlib(c["flag"][i], c["forward"][i], c["strike"][i], c["t"][i], rate, c["sigma"][i])
        scale = c["forward"][i]
        # prices, theta and vega are in rupees: compared relative to the forward's size
        assert ours[i] == pytest.approx(ref["price"], abs=1e-6 * max(1.0, scale / 100)), i
        assert g.delta[i] == pytest.approx(ref["delta"], abs=1e-6), i
        assert g.gamma[i] == pytest.approx(ref["gamma"], rel=1e-6, abs=1e-12), i
        assert g.theta[i] == pytest.approx(ref["theta"], rel=1e-6, abs=1e-6), i
        assert g.vega[i] == pytest.approx(ref["vega"], rel=1e-6, abs=1e-6), i


def test_implied_vol_recovers_the_volatility_quantlib_priced() -> None:
    c = _random_chain(500, RNG_SEED + 1)
    rate = 0.10
    prices = np.array(
        [
            _quantlib(c["flag"][i], c["forward"][i], c["strike"][i], c["t"][i], rate, c["sigma"][i])["price"]
            for i in range(500)
        ]
    )
    out = black76.implied_vol(prices, c["forward"], c["strike"], c["t"], rate, c["flag"])
    vega = black76.greeks(c["flag"], c["forward"], c["strike"], c["t"], rate, c["sigma"]).vega
    # where one vol point moves the price by less than 1e-7 (a millionth of a paisa), double
    # precision no longer pins the volatility to 1e-6: those few are left out, and counted
    conditioned = vega > 1e-7
    assert conditioned.sum() > 480
    assert np.all(np.isfinite(out.iv[conditioned]))
    assert np.max(np.abs(out.iv[conditioned] - c["sigma"][conditioned])) < 1e-6
    # and QuantLib's own solver agrees with ours on the same prices
    for i in np.flatnonzero(conditioned)[:100]:
        kind = ql.Option.Call if c["flag"][i] == "c" else ql.Option.Put
        df = math.exp(-rate * c["t"][i])
        sd = ql.blackFormulaImpliedStdDev(
            kind, c["strike"][i], c["forward"][i], prices[i], df, 0.0, ql.nullDouble(), 1e-14, 1000
        )
        assert out.iv[i] == pytest.approx(sd / math.sqrt(c["t"][i]), abs=1e-6)


def test_unsolvable_quotes_are_null_with_their_reason() -> None:
    f, r, t = 22000.0, 0.10, 30 / 365
    df = math.exp(-r * t)
    cases = [
        ("c", 21000.0, t, 0.0, black76.NO_PRICE),
        ("c", 21000.0, t, float("nan"), black76.NO_PRICE),
        ("c", 21000.0, 0.0, 1200.0, black76.EXPIRED),
        ("c", 21000.0, t, 0.9 * df * 1000.0, black76.BELOW_INTRINSIC),
        ("p", 23000.0, t, 0.9 * df * 1000.0, black76.BELOW_INTRINSIC),
        ("c", 22000.0, t, df * f, black76.ABOVE_MAXIMUM),
        ("p", 22000.0, t, df * 22000.0 + 1, black76.ABOVE_MAXIMUM),
        ("c", 22000.0, t, 400.0, None),
    ]
    out = black76.implied_vol(
        [c[3] for c in cases], f, [c[1] for c in cases], [c[2] for c in cases], r, [c[0] for c in cases]
    )
    assert out.reason == [c[4] for c in cases]
    assert np.all(np.isnan(out.iv[:-1])) and 0.0 < out.iv[-1] < 1.0
    nof = black76.implied_vol([400.0], float("nan"), [22000.0], t, r, "c")
    assert nof.reason == [black76.NO_FORWARD]
    g = black76.greeks("c", f, 22000.0, t, r, [float("nan")])
    assert np.isnan(g.delta[0]) and np.isnan(g.vega[0])


def test_scalars_and_bad_flags() -> None:
    p = black76.price("c", 22000.0, 22000.0, 30 / 365, 0.1, 0.18)
    assert p.shape == () and float(p) == pytest.approx(
        _quantlib("c", 22000.0, 22000.0, 30 / 365, 0.1, 0.18)["price"], abs=1e-6
    )
    with pytest.raises(ValueError, match="'c' or 'p'"):
        black76.price("x", 1.0, 1.0, 1.0, 0.1, 0.2)
