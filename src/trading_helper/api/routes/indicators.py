"""Indicators: studies (``indicators/studies.py``) over the merged candle series of a range, each
with its warm-up read (and backfilled) before ``from`` so that the first value in range is right."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from trading_helper.api.deps import ServiceDep
from trading_helper.api.openapi import WITH_PARAMS
from trading_helper.api.routes.candles import (
    RANGE_ERRORS,
    RANGE_LIMITS,
    TIMES_DOC,
    FromParam,
    InstrumentParam,
    ToParam,
    query_range,
)
from trading_helper.api.schemas import BackfillOut, InstrumentOut, Interval, InvalidRequestOut
from trading_helper.indicators.series import IndicatorSeries, study_series
from trading_helper.indicators.studies import KINDS, MAX_STUDIES, STUDIES_PATTERN, Placement, parse_studies
from trading_helper.redact import redact
from trading_helper.timeframes import IST, Timeframe

router = APIRouter(prefix="/api/indicators", tags=["indicators"])


def _kinds_doc() -> str:
    rows = []
    for kind in KINDS.values():
        params = ":".join(f"{p.name}={p.default:g}" for p in kind.params)
        rows.append(
            f"`{kind.name}{':' + params if params else ''}` ({', '.join(kind.outputs)}; {kind.placement})"
        )
    return "; ".join(rows)


_DOC = (
    "Studies over the candles of [from, to) (the same series as `GET /api/candles`), one value per "
    "candle and output, aligned to `time` (the candles' buckets); `null` where a study is not yet "
    "defined. Before `from`, each study's warm-up is read (its holes fetched from the broker like any "
    "other range): `warmup_bars` bars wanted, `warmup_read` found (fewer only where the data ends or "
    "an illiquid instrument has no candle for many buckets). Studies, `name[:param...]` with the "
    f"defaults: {_kinds_doc()}. Aliases: bollinger = bb, st = supertrend. VWAP is anchored at each "
    "IST session; SuperTrend's `direction` is +1 up, -1 down; OI `change` is against the previous "
    "candle. SMA, EMA, RSI, MACD, Bollinger and ATR are TA-Lib's, SuperTrend and VWAP talipp's. "
    f"At most {MAX_STUDIES} studies. " + TIMES_DOC
)


class StudyOut(BaseModel):
    study: str = Field(description="the study as parsed, every parameter written out (`macd:12:26:9`)")
    kind: str
    params: dict[str, float]
    placement: Placement = Field(description="overlay: on the price scale; pane: a pane of its own")
    warmup_bars: int = Field(description="bars this study needs before `from`")
    series: dict[str, list[float | None]] = Field(description="each output, one value per entry of `time`")


_EXAMPLE: dict[str, Any] = {
    "instrument": InstrumentOut.model_json_schema()["examples"][0],
    "interval": "5m",
    "time": ["2025-10-17T09:15:00+05:30", "2025-10-17T09:20:00+05:30"],
    "studies": [
        {
            "study": "ema:20",
            "kind": "ema",
            "params": {"period": 20},
            "placement": "overlay",
            "warmup_bars": 219,
            "series": {"ema": [1376.21, 1376.5]},
        }
    ],
    "warmup_bars": 219,
    "warmup_read": 219,
    "backfill": {"fetched_ranges": 0, "broker_calls": 0, "error": None},
}


class IndicatorResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    instrument: InstrumentOut
    interval: Interval
    time: list[str] = Field(description="the candles' buckets (IST, +05:30), in time order")
    studies: list[StudyOut]
    warmup_bars: int = Field(description="bars wanted before `from`: the largest warm-up of the studies")
    warmup_read: int = Field(description="bars found before `from` (at most `warmup_bars`)")
    backfill: BackfillOut


def _values(values: Any) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


def answer(series: IndicatorSeries) -> dict[str, Any]:
    """The answer's JSON object (the shape of :class:`IndicatorResponse`)."""
    report = series.backfill
    return {
        "instrument": InstrumentOut.of(series.instrument).model_dump(mode="json"),
        "interval": series.timeframe.value,
        "time": [c.bucket.astimezone(IST).isoformat() for c in series.candles],
        "studies": [
            {
                "study": s.study.spec,
                "kind": s.study.kind.name,
                "params": {p.name: v for p, v in zip(s.study.kind.params, s.study.params, strict=True)},
                "placement": s.study.kind.placement,
                "warmup_bars": s.study.warmup(series.timeframe),
                "series": {name: _values(values) for name, values in s.values.items()},
            }
            for s in series.studies
        ],
        "warmup_bars": series.warmup_bars,
        "warmup_read": series.warmup_read,
        "backfill": {
            "fetched_ranges": report.fetched_ranges,
            "broker_calls": report.broker_calls,
            "error": redact(str(report.error)) if report.error is not None else None,
        },
    }


@router.get(
    "",
    response_model=IndicatorResponse,
    summary="Indicators over an instrument's candles",
    description=_DOC,
    responses={
        **WITH_PARAMS,
        **RANGE_ERRORS,
        422: {
            "model": InvalidRequestOut,
            "description": "the request does not fit the schema (`invalid_request`), a study spec "
            "that cannot be computed (`invalid_study`: unknown name, a parameter out of range), or an "
            "instrument reference outside the grammar (`invalid_reference`)",
        },
    },
    openapi_extra=RANGE_LIMITS,
)
async def get_indicators(
    service: ServiceDep,
    instrument: InstrumentParam,
    studies: Annotated[
        str,
        Query(
            description="comma-separated study specs, `name[:param...]`",
            min_length=1,
            max_length=400,
            pattern=STUDIES_PATTERN,
            examples=["ema:20,rsi:14,supertrend:10:3,vwap"],
        ),
    ],
    interval: Annotated[Interval, Query()] = "1m",
    start: FromParam = None,
    end: ToParam = None,
) -> Response:
    parsed = parse_studies(studies)
    tf = Timeframe(interval)
    start, end = query_range(tf, start, end)
    series = await study_series(service, instrument, tf, start, end, parsed)
    return Response(json.dumps(answer(series), separators=(",", ":")), media_type="application/json")
