"""Black-76 on the forward: price, implied volatility and Greeks, vectorised over a chain.

The one place the project prices options (the chain's analytics and the simulator both call it).
Every function broadcasts its arguments with NumPy, so a whole chain is one call; scalars work too
(the result is then a 0-d array: ``float(price("c", ...))``).

Conventions (the ones NSE's own chain and vollib use):
- ``flag`` is ``"c"`` (call) or ``"p"`` (put), a string or an array of them;
- ``t_years`` is calendar time to expiry in years (days / 365), ``rate`` the continuously
  compounded annual rate as a fraction (0.10 for 10 %), ``sigma`` the annual volatility (0.18);
- ``theta`` is per calendar day, ``vega`` per volatility point (per 1 % of sigma).

The library is `fast_vollib` (numpy backend), chosen after checking, on this project's Python 3.11:
- ``opengreeks`` 0.1.0 and 0.2.0 (Rust, vollib's API, the fastest on paper): their ``abi3`` wheels
  say CPython >= 3.9 but call ``PyErr_SetRaisedException`` (a 3.12 symbol), so the import fails on
  3.11 and there is no source release to build;
- ``vollib`` 1.0.11 (py_vollib's maintained successor, Jäckel's "Let's be rational") is scalar only:
  about 60 ms for the IV and four Greeks of a 200-strike chain, twelve times the 5 ms budget;
- ``py_vollib_vectorized`` has had no release since 2021; ``fast_vollib`` (released 2026) is its
  maintained successor with vollib's names and conventions, vectorised in NumPy: about 1.5 ms for
  the same chain here. Its IV solver is Halley's method with a bisection fallback, not Jäckel's,
  and stops early on low-vega quotes: two Newton steps on its own price and vega finish the job
  (``_polish``);
- QuantLib (C++ through SWIG) is about as fast looped per option, but it is the independent
  reference the tests compare with, so it stays out of the product.

What the library does not decide is ours: which quotes are solvable at all (no price, expired,
outside the no-arbitrage bounds) is checked here first, so every unsolved IV has a reason, and
the library only sees finite, solvable inputs (it refuses non-finite ones outright).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

# reasons an implied volatility is null (the API shows them as they are)
NO_PRICE: Final = "no_price"  # no bid/ask mid and no last price, or a price <= 0
EXPIRED: Final = "expired"  # no time left to expiry
NO_FORWARD: Final = "no_forward"  # neither parity nor the future gave a forward
BELOW_INTRINSIC: Final = "below_intrinsic"  # price under the discounted intrinsic value
ABOVE_MAXIMUM: Final = "above_maximum"  # call above the discounted forward, put above the discounted strike
NOT_SOLVED: Final = "not_solved"  # the solver found no volatility (too close to a bound)
REASONS: Final = (NO_PRICE, EXPIRED, NO_FORWARD, BELOW_INTRINSIC, ABOVE_MAXIMUM, NOT_SOLVED)
#: Newton steps after the library's solver (see _polish)
POLISH_STEPS: Final = 2


@dataclass(frozen=True, slots=True)
class Greeks:
    """Black-76 Greeks per option: delta, gamma (per unit of forward), theta per calendar day,
    vega per volatility point. NaN where the volatility is NaN."""

    delta: FloatArray
    gamma: FloatArray
    theta: FloatArray
    vega: FloatArray


@dataclass(frozen=True, slots=True)
class ImpliedVol:
    """Implied volatility per option (NaN where unsolved) and, there, the reason (else None)."""

    iv: FloatArray
    reason: list[str | None]


def _fv() -> Any:
    # every call names backend="numpy": "auto" probes for torch, jax and CUDA on each call (a
    # third of a chain's time). Imported on first use: fast_vollib (with pandas) costs about half a second to import, which
    # every CLI command would otherwise pay
    import fast_vollib

    return fast_vollib


def _flags(flag: ArrayLike, shape: tuple[int, ...]) -> NDArray[np.str_]:
    flags = np.broadcast_to(np.asarray(flag, dtype="<U1"), shape)
    bad = ~np.isin(flags, ("c", "p"))
    if bad.any():
        raise ValueError(f"option flag must be 'c' or 'p', got {flags[bad].flat[0]!r}")
    return flags


def _arrays(*values: ArrayLike) -> tuple[FloatArray, ...]:
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in values))
    # copies (broadcast views are read-only); np.ascontiguousarray would turn a scalar into 1-d
    return tuple(np.array(a, dtype=np.float64) for a in arrays)


def price(
    flag: ArrayLike, forward: ArrayLike, strike: ArrayLike, t_years: ArrayLike, rate: float, sigma: ArrayLike
) -> FloatArray:
    """The discounted Black-76 price, e^(-rt) * (F N(d1) - K N(d2)) for a call (the put by parity)."""
    f, k, t, s = _arrays(forward, strike, t_years, sigma)
    flags = _flags(flag, f.shape)
    if f.size == 0:
        return np.zeros(f.shape)
    out = _fv().fast_black(
        flags.ravel(), f.ravel(), k.ravel(), t.ravel(), rate, s.ravel(), return_as="numpy", backend="numpy"
    )
    return np.asarray(out, dtype=np.float64).reshape(f.shape)


def bounds(
    flag: ArrayLike, forward: ArrayLike, strike: ArrayLike, t_years: ArrayLike, rate: float
) -> tuple[FloatArray, FloatArray]:
    """The no-arbitrage bounds of a Black-76 price: (discounted intrinsic, discounted maximum)."""
    f, k, t = _arrays(forward, strike, t_years)
    flags = _flags(flag, f.shape)
    df = np.exp(-rate * t)
    call = flags == "c"
    low = df * np.where(call, np.maximum(f - k, 0.0), np.maximum(k - f, 0.0))
    high = df * np.where(call, f, k)
    return low, high


def implied_vol(
    option_price: ArrayLike,
    forward: ArrayLike,
    strike: ArrayLike,
    t_years: ArrayLike,
    rate: float,
    flag: ArrayLike,
) -> ImpliedVol:
    """The volatility that Black-76 prices at ``option_price``; NaN with a reason where none exists."""
    p, f, k, t = _arrays(option_price, forward, strike, t_years)
    flags = _flags(flag, p.shape)
    iv = np.full(p.shape, np.nan)
    reason = np.full(p.shape, None, dtype=object)
    with np.errstate(invalid="ignore"):
        reason[~(np.isfinite(f) & (f > 0) & np.isfinite(k) & (k > 0))] = NO_FORWARD
        reason[~(np.isfinite(t) & (t > 0)) & (reason == None)] = EXPIRED  # noqa: E711
        reason[~(np.isfinite(p) & (p > 0)) & (reason == None)] = NO_PRICE  # noqa: E711
        ok = reason == None  # noqa: E711
        low, high = bounds(flags, np.where(ok, f, 1.0), np.where(ok, k, 1.0), np.where(ok, t, 1.0), rate)
        reason[ok & (p <= low)] = BELOW_INTRINSIC
        reason[ok & (p >= high)] = ABOVE_MAXIMUM
    ok = reason == None  # noqa: E711
    if ok.any():
        # an in-the-money option is solved as its out-of-the-money twin (put-call parity on the
        # forward, C - P = e^(-rt) (F - K), the same volatility): the library's solver loses up to
        # 2e-6 of volatility on deep in-the-money calls, their twin pins it to 1e-9
        fo, ko, to, po, flo = f[ok], k[ok], t[ok], p[ok], flags[ok]
        parity = np.exp(-rate * to) * (fo - ko)
        itm_call = (flo == "c") & (ko < fo)
        itm_put = (flo == "p") & (ko > fo)
        po = np.where(itm_call, po - parity, np.where(itm_put, po + parity, po))
        flo = np.where(itm_call, "p", np.where(itm_put, "c", flo))
        with warnings.catch_warnings():
            # on_error="ignore" returns NaN for what the solver cannot price; counted below instead
            warnings.simplefilter("ignore")
            solved = _fv().fast_implied_volatility_black(
                po, fo, ko, rate, to, flo, return_as="numpy", on_error="ignore", backend="numpy"
            )
        solved = np.asarray(solved, dtype=np.float64).reshape(-1)
        solved[~(np.isfinite(solved) & (solved > 0))] = np.nan
        solved = _polish(solved, po, fo, ko, to, rate, flo)
        iv[ok] = solved
        reason[ok & ~np.isfinite(iv)] = NOT_SOLVED
    return ImpliedVol(iv=iv, reason=list(reason.ravel()))


def _polish(
    sigma: FloatArray,
    target: FloatArray,
    f: FloatArray,
    k: FloatArray,
    t: FloatArray,
    rate: float,
    flags: NDArray[np.str_],
) -> FloatArray:
    """Newton steps on the library's own price and vega. Its solver stops after eight Halley
    steps once the price is within 1e-6, which leaves up to ~2e-6 of volatility on a quote whose
    vega is small (far from the money, days to expiry); two Newton steps from there reach the
    volatility to within ~1e-12. A step that would leave the positive reals is not taken."""
    fv = _fv()
    for _ in range(POLISH_STEPS):
        live = np.isfinite(sigma)
        if not live.any():
            break
        s = np.where(live, sigma, 0.2)
        model = np.asarray(
            fv.fast_black(flags, f, k, t, rate, s, return_as="numpy", backend="numpy"), dtype=np.float64
        ).ravel()
        vega_unit = (
            100.0
            * np.asarray(
                fv.vectorized_vega(
                    flags, f, k, t, rate, s, model="black", return_as="numpy", backend="numpy"
                ),
                dtype=np.float64,
            ).ravel()
        )
        usable = live & (vega_unit > 1e-300)
        step = np.zeros_like(s)
        np.divide(model - target, vega_unit, out=step, where=usable)
        moved = s - step
        sigma = np.where(usable & np.isfinite(moved) & (moved > 0), moved, sigma)
    return sigma


def greeks(
    flag: ArrayLike, forward: ArrayLike, strike: ArrayLike, t_years: ArrayLike, rate: float, sigma: ArrayLike
) -> Greeks:
    """Delta, gamma, theta per day and vega per vol point; NaN wherever sigma is NaN or t <= 0."""
    f, k, t, s = _arrays(forward, strike, t_years, sigma)
    flags = _flags(flag, f.shape)
    ok = np.isfinite(f) & (f > 0) & np.isfinite(k) & (k > 0) & np.isfinite(t) & (t > 0)
    ok &= np.isfinite(s) & (s > 0)
    out = {name: np.full(f.shape, np.nan) for name in ("delta", "gamma", "theta", "vega")}
    if ok.any():
        # one pass over d1, d2 and the normal distribution for all four (the per-Greek functions
        # each start again from the inputs: five times the work, the same figures to the bit)
        found = _fv().get_all_greeks(
            flags[ok], f[ok], k[ok], t[ok], rate, s[ok], model="black", return_as="dict", backend="numpy"
        )
        for name in out:
            out[name][ok] = np.asarray(found[name], dtype=np.float64).ravel()
    return Greeks(**out)
