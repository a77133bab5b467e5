"""GET /api/indicators over real sockets, a real database and the fake Kite: the studies equal
an independent computation over the same candles (those of GET /api/candles, the warm-up before
``from`` included), the warm-up is backfilled from the broker like the range, bad specs are 422."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from tests.api.conftest import Api
from tests.indicators.reference import assert_same, expected
from trading_helper.api.routes.indicators import IndicatorResponse
from trading_helper.indicators.series import warmup_span
from trading_helper.indicators.studies import Bars, parse_studies
from trading_helper.models import CANDLE_WIRE_FIELDS, Candle
from trading_helper.timeframes import Timeframe

STUDIES = "ema:20,rsi:14,macd,bb:20:2,atr:14,supertrend:10:3,vwap,sma:50,volume,oi"


def candles_of(body: dict[str, Any], tf: Timeframe) -> list[Candle]:
    """The wire candles of a GET /api/candles answer as models (fields in wire order)."""
    return [
        Candle(datetime.fromisoformat(c["time"]), *(c[k] for k in CANDLE_WIRE_FIELDS[1:]), timeframe=tf)
        for c in body["candles"]
    ]


def as_array(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


async def test_indicators_equal_an_independent_computation_warmup_included(api: Api) -> None:
    tf = Timeframe.M5
    params = {
        "instrument": "NSE:RELIANCE",
        "interval": tf.value,
        "from": "2024-05-06T11:00:00+05:30",
        "to": "2024-05-08T15:30:00+05:30",
        "studies": STUDIES,
    }
    calls_before = api.kite.history_calls[("738561", "5minute")]
    first = await api.client.get("/api/indicators", params=params)
    assert first.status_code == 200, first.text
    body = first.json()
    IndicatorResponse.model_validate(body)
    studies = parse_studies(STUDIES)
    need = max(s.warmup(tf) for s in studies)
    assert body["warmup_bars"] == need and body["warmup_read"] == need
    # the range and its warm-up were both fetched from the broker (nothing was stored before)
    assert body["backfill"]["broker_calls"] >= 2 and body["backfill"]["error"] is None
    assert api.kite.history_calls[("738561", "5minute")] > calls_before

    # the same candles, read by the candles route: the range, and enough before it
    start = datetime.fromisoformat(params["from"])
    in_range = await api.client.get(
        "/api/candles", params={k: v for k, v in params.items() if k != "studies"}
    )
    before = await api.client.get(
        "/api/candles",
        params={
            "instrument": "NSE:RELIANCE",
            "interval": tf.value,
            "from": (start - warmup_span(tf, need)).isoformat(),
            "to": params["from"],
        },
    )
    assert in_range.status_code == before.status_code == 200
    candles = candles_of(in_range.json(), tf)
    warm = candles_of(before.json(), tf)[-need:]
    assert len(warm) == need
    assert body["time"] == [c["time"] for c in in_range.json()["candles"]]
    assert body["time"][0] == "2024-05-06T11:00:00+05:30"

    bars = Bars.of([*warm, *candles], tf)
    answered = {s["study"]: s for s in body["studies"]}
    assert list(answered) == [s.spec for s in studies]
    for study in studies:
        out = answered[study.spec]
        assert out["placement"] == study.kind.placement and out["warmup_bars"] == study.warmup(tf)
        want = expected(study, bars)
        for name, values in want.items():
            got = as_array(out["series"][name])
            assert len(got) == len(candles)
            assert_same(got, values[need:], f"{study.spec}.{name}")
            assert not np.isnan(got[0]), f"{study.spec}.{name}: the first value in range is defined"

    # asked again: nothing left to fetch, the same answer
    again = await api.client.get("/api/indicators", params=params)
    assert again.json()["backfill"]["broker_calls"] == 0
    assert again.json()["studies"] == body["studies"]


async def test_a_bad_study_spec_is_a_specific_422(api: Api) -> None:
    base = {"instrument": "NSE:RELIANCE", "interval": "5m", "from": "2024-05-06T09:15:00+05:30"}
    base["to"] = "2024-05-06T15:30:00+05:30"
    cases = {
        "foo:3": "unknown study 'foo'",
        "ema:0": "ema:0: period must be between 1 and 500",
        "macd:26:12": "fast period must be shorter",
        "vwap:1": "vwap takes no parameters",
    }
    for spec, message in cases.items():
        response = await api.client.get("/api/indicators", params={**base, "studies": spec})
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_study" and message in response.json()["detail"]
    # outside the grammar, or missing: the schema refuses it
    for params in ({**base, "studies": "ema;20"}, base):
        response = await api.client.get("/api/indicators", params=params)
        assert response.status_code == 422 and response.json()["code"] == "invalid_request", response.text
    # the range rules are the candles route's
    wrong = await api.client.get("/api/indicators", params={**base, "to": base["from"], "studies": "ema"})
    assert wrong.status_code == 400 and wrong.json()["code"] == "invalid_range"
