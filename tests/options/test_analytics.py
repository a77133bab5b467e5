"""Chain analytics: max pain against a brute force, PCR against the OI sums, build-up as a
property, the parity forward and a whole chain priced by QuantLib read back by compute_chain."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.options.market import ql_price, smile
from trading_helper.options import analytics
from trading_helper.options.chain import Baseline, ChainInputs, OptionQuote, compute_chain, iv_price
from trading_helper.options.expiry import expiry_moment, years_to_expiry
from trading_helper.timeframes import IST


def _brute_max_pain(strikes: list[float], call_oi: list[int], put_oi: list[int]) -> float | None:
    best: tuple[float, float] | None = None
    for s in strikes:  # every candidate settlement, every contract, written out
        pay = 0.0
        for k, c, p in zip(strikes, call_oi, put_oi, strict=True):
            if s > k:
                pay += c * (s - k)
            if k > s:
                pay += p * (k - s)
        if best is None or pay < best[0] or (pay == best[0] and s < best[1]):
            best = (pay, s)
    return None if best is None or sum(call_oi) + sum(put_oi) == 0 else best[1]


@given(
    st.lists(st.tuples(st.integers(0, 5_000_000), st.integers(0, 5_000_000)), min_size=1, max_size=60),
    st.sampled_from([25.0, 50.0, 100.0]),
)
def test_max_pain_equals_brute_force(oi: list[tuple[int, int]], step: float) -> None:
    strikes = [20000.0 + step * i for i in range(len(oi))]
    calls, puts = [c for c, _ in oi], [p for _, p in oi]
    assert analytics.max_pain(strikes, calls, puts) == _brute_max_pain(strikes, calls, puts)


def test_max_pain_is_not_the_largest_oi_strike() -> None:
    strikes = [100.0, 110.0, 120.0]
    # the 120 call holds the most OI; settling at 100 costs the writers nothing at all
    assert analytics.max_pain(strikes, [0, 0, 1000], [300, 0, 0]) == 100.0
    # 300 puts at 120 pay 3,000 at 110 and 6,000 at 100; 100 calls at 100 pay 1,000 at 110
    assert analytics.max_pain(strikes, [100, 0, 0], [0, 0, 300]) == 120.0
    assert analytics.max_pain(strikes, [0, 0, 0], [0, 0, 0]) is None


_PRICE = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))


@given(_PRICE, _PRICE)
def test_buildup_classification(dp: float | None, doi: float | None) -> None:
    got = analytics.buildup(dp, doi)
    if dp is None or doi is None or dp == 0 or doi == 0:
        assert got is None
        return
    assert got in analytics.BUILDUPS
    # the four quadrants, each read from its own definition
    assert (got == "long_buildup") == (dp > 0 and doi > 0)
    assert (got == "short_buildup") == (dp < 0 and doi > 0)
    assert (got == "short_covering") == (dp > 0 and doi < 0)
    assert (got == "long_unwinding") == (dp < 0 and doi < 0)
    # the sign is what counts, not the size
    assert analytics.buildup(dp * 3.5, doi * 2.0) == got


def test_expiry_times_per_exchange() -> None:
    d = date(2026, 12, 3)
    assert expiry_moment("NFO", d) == datetime(2026, 12, 3, 15, 30, tzinfo=IST)
    assert expiry_moment("BFO", d).hour == 15
    assert expiry_moment("CDS", d) == datetime(2026, 12, 3, 12, 30, tzinfo=IST)
    assert expiry_moment("MCX", d) == datetime(2026, 12, 3, 23, 30, tzinfo=IST)
    assert years_to_expiry("NFO", d, datetime(2026, 12, 2, 15, 30, tzinfo=IST)) == pytest.approx(1 / 365)
    assert years_to_expiry("NFO", d, datetime(2026, 12, 3, 16, 0, tzinfo=IST)) == 0.0
    with pytest.raises(ValueError, match="aware"):
        years_to_expiry("NFO", d, datetime(2026, 12, 2))


def _priced_chain(
    f: float, as_of: datetime, expiry: date, rate: float, step: float = 50.0, n: int = 20
) -> list[OptionQuote]:
    t = years_to_expiry("NFO", expiry, as_of)
    atm = round(f / step) * step
    quotes = []
    rng = np.random.default_rng(7)
    for i in range(-n, n + 1):
        k = atm + i * step
        for opt in ("CE", "PE"):
            p = ql_price(opt, f, k, t, smile(k, f), rate)
            quotes.append(
                OptionQuote(
                    instrument_id=int(k) * 10 + (1 if opt == "CE" else 2),
                    tradingsymbol=f"NIFTY{int(k)}{opt}",
                    strike=k,
                    option_type=opt,
                    ltp=p,
                    bid=p - 0.0001,
                    ask=p + 0.0001,
                    oi=int(rng.integers(0, 10_000)) * 75,
                    volume=int(rng.integers(0, 100_000)),
                )
            )
    return quotes


def test_chain_recovers_forward_and_smile_priced_by_quantlib() -> None:
    as_of = datetime(2026, 12, 2, 11, 0, tzinfo=IST)
    expiry, rate, f = date(2026, 12, 8), 0.10, 24_123.4
    quotes = _priced_chain(f, as_of, expiry, rate)
    doc = compute_chain(
        ChainInputs(
            underlying="NSE:NIFTY 50",
            exchange="NFO",
            expiry=expiry,
            as_of=as_of,
            rate=rate,
            quotes=quotes,
            spot=24_100.0,
            future_price=24_150.0,
        )
    )
    assert doc["forward_source"] == "parity"
    assert doc["forward"] == pytest.approx(f, abs=1e-6)
    assert doc["atm_strike"] == 24_100.0
    t = years_to_expiry("NFO", expiry, as_of)
    assert doc["time_to_expiry_years"] == t
    for row in doc["strikes"]:
        for side in (row["ce"], row["pe"]):
            assert side["iv"] == pytest.approx(smile(row["strike"], f), abs=1e-6), (row["strike"], side)
            assert side["iv_reason"] is None
    # PCR is the OI sums' ratio; max pain the brute force's
    put_oi = sum(q.oi or 0 for q in quotes if q.option_type == "PE")
    call_oi = sum(q.oi or 0 for q in quotes if q.option_type == "CE")
    assert doc["pcr_oi"] == put_oi / call_oi
    pv = sum(q.volume or 0 for q in quotes if q.option_type == "PE")
    cv = sum(q.volume or 0 for q in quotes if q.option_type == "CE")
    assert doc["pcr_volume"] == pv / cv
    ks = [r["strike"] for r in doc["strikes"]]
    assert doc["max_pain"] == _brute_max_pain(
        ks, [r["ce"]["oi"] for r in doc["strikes"]], [r["pe"]["oi"] for r in doc["strikes"]]
    )
    atm = next(r for r in doc["strikes"] if r["strike"] == 24_100.0)
    assert doc["straddle"] == pytest.approx(atm["ce"]["iv_price"] + atm["pe"]["iv_price"])
    assert doc["atm_iv"] == pytest.approx(smile(24_100.0, f), abs=1e-6)
    assert [p["side"] for p in doc["smile"]] == ["pe" if k < f else "ce" for k in ks]


def test_forward_falls_back_to_the_future_and_reasons_show() -> None:
    as_of = datetime(2026, 12, 2, 11, 0, tzinfo=IST)
    quotes = [
        OptionQuote(1, "X24000CE", 24000.0, "CE", ltp=300.0, oi=100, volume=5),
        OptionQuote(2, "X24100PE", 24100.0, "PE", ltp=None, bid=None, ask=None, oi=50),
        OptionQuote(3, "X23000CE", 23000.0, "CE", ltp=1.0, oi=10),
    ]
    base = {1: Baseline(ltp=280.0, oi=80), 3: Baseline(ltp=2.0, oi=20)}
    week = {"underlying": "NSE:NIFTY 50", "exchange": "NFO", "expiry": date(2026, 12, 8), "as_of": as_of}
    doc = compute_chain(
        ChainInputs(**week, rate=0.1, quotes=quotes, spot=24_000.0, future_price=24_050.0, baseline=base)
    )
    assert doc["forward_source"] == "future" and doc["forward"] == 24_050.0
    rows = {r["strike"]: r for r in doc["strikes"]}
    assert rows[24000.0]["ce"]["iv"] is not None and rows[24000.0]["ce"]["buildup"] == "long_buildup"
    assert rows[24000.0]["ce"]["oi_change"] == 20
    assert rows[24100.0]["pe"]["iv"] is None and rows[24100.0]["pe"]["iv_reason"] == "no_price"
    assert rows[23000.0]["ce"]["iv_reason"] == "below_intrinsic"
    assert rows[23000.0]["ce"]["buildup"] == "long_unwinding"
    assert rows[24100.0]["ce"] is None and rows[24100.0]["pe"]["oi_change"] is None
    nofwd = compute_chain(ChainInputs(**week, rate=0.1, quotes=quotes[:1]))
    assert nofwd["forward"] is None and nofwd["strikes"][0]["ce"]["iv_reason"] == "no_forward"


def test_iv_price_is_the_mid_else_the_last_price() -> None:
    assert iv_price(10.0, 12.0, 15.0) == 11.0
    assert iv_price(None, 12.0, 15.0) == 15.0
    assert iv_price(0.0, 12.0, 15.0) == 15.0
    assert iv_price(None, None, None) is None
