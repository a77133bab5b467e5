"""Candles: one service behind two routes (GET with query parameters, POST with the
specification's body). Gaps are backfilled from the broker before the merged series is read."""

from __future__ import annotations

import json
from datetime import datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from trading_helper import clock
from trading_helper.api.deps import ServiceDep
from trading_helper.api.openapi import WITH_BODY, WITH_PARAMS, Responses
from trading_helper.api.schemas import (
    CandleRequest,
    CandleResponse,
    ErrorOut,
    InstrumentOut,
    Interval,
    RefText,
)
from trading_helper.candles.read import Prefer, read_candles_json
from trading_helper.candles.service import EARLIEST, LATEST, CandleSeries, as_ist
from trading_helper.errors import InvalidRange
from trading_helper.redact import redact
from trading_helper.timeframes import Timeframe, max_span_doc

router = APIRouter(prefix="/api/candles", tags=["candles"])

#: the range rules of a GET over one instrument's range, for its docs
TIMES_DOC = (
    "Times are ISO 8601; naive inputs are taken as IST (Asia/Kolkata), answers are in IST (+05:30). "
    f"Maximum span per interval: {max_span_doc()}; from and to between {EARLIEST.date()} and "
    f"{LATEST.date()} (`x-range-limits`)."
)
_DOC = (
    "Returns one candle per bucket starting in [from, to), in time order. Ranges missing from the "
    "database (inside exchange sessions, not captured live, not fetched before) are first fetched from "
    "the configured broker's history. Each candle says its `source`: `live` (built from ticks over a "
    "fully captured bucket), `broker` (broker history), or `partial` (ticks over a bucket captured "
    "only in part, such as the forming one). " + TIMES_DOC
)
#: the range rules JSON Schema cannot state across two fields, machine-readable for clients
RANGE_LIMITS = {
    "x-range-limits": {
        "max_span_days": {tf.value: tf.facts.max_span.days for tf in Timeframe},
        "earliest": EARLIEST.isoformat(),
        "latest": LATEST.isoformat(),
        "from_before_to": True,
    }
}
RANGE_ERRORS: Responses = {
    400: {
        "model": ErrorOut,
        "description": "invalid range (`invalid_range`: from >= to, span too long, see "
        "`x-range-limits`), or a body that is not JSON (`invalid_body`)",
    },
    404: {"model": ErrorOut, "description": "unknown instrument"},
}


#: the query parameters of a GET over one instrument's range (``/api/candles``, ``/api/indicators``)
InstrumentParam = Annotated[
    RefText, Query(description="our id, EXCHANGE:SYMBOL, or a broker token", examples=["NSE:RELIANCE"])
]
FromParam = Annotated[
    datetime | None,
    Query(
        alias="from",
        description="ISO 8601; naive = IST; default: `to` minus a span fitting the interval",
        examples=["2025-10-17T09:15:00+05:30"],
    ),
]
ToParam = Annotated[
    datetime | None,
    Query(
        alias="to", description="ISO 8601; naive = IST; default: now", examples=["2025-10-17T15:30:00+05:30"]
    ),
]


#: which source a read prefers where both have a candle (``candles.read.Prefer``)
PreferParam = Annotated[
    Prefer,
    Query(
        description="`live` (default): live candles where the bucket was fully captured, as always; "
        "`broker`: the broker's candle wherever one is stored (fetched for a gap, or by "
        "`trading-helper reconcile`), the live one elsewhere",
    ),
]


def query_range(tf: Timeframe, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """A GET's ``from`` and ``to``: ``to`` defaults to now, ``from`` to ``to`` minus the interval's
    default span."""
    end = end or clock.now()
    if start is None:
        try:
            start = as_ist(end) - tf.facts.default_span
        except OverflowError as exc:
            raise InvalidRange("`to` is out of range") from exc
    return start, end


def render(series: CandleSeries[str]) -> Response:
    """The answer as JSON bytes around the database's candle array: a day of 1m is ~375 candles,
    and building and validating them here again would cost more than reading them. The response
    model still documents the shape in OpenAPI; tests check answers against it."""
    report = series.backfill
    head = json.dumps(
        {
            "instrument": InstrumentOut.of(series.instrument).model_dump(mode="json"),
            "interval": series.timeframe.value,
            "backfill": {
                "fetched_ranges": report.fetched_ranges,
                "broker_calls": report.broker_calls,
                "error": redact(str(report.error)) if report.error is not None else None,
            },
        },
        separators=(",", ":"),
    )
    return Response(f'{head[:-1]},"candles":{series.candles}}}', media_type="application/json")


@router.get(
    "",
    response_model=CandleResponse,
    summary="Candles for an instrument (query parameters)",
    description=_DOC,
    responses={**WITH_PARAMS, **RANGE_ERRORS},
    openapi_extra=RANGE_LIMITS,
)
async def get_candles(
    service: ServiceDep,
    instrument: InstrumentParam,
    interval: Annotated[Interval, Query()] = "1m",
    start: FromParam = None,
    end: ToParam = None,
    prefer: PreferParam = "live",
) -> Response:
    tf = Timeframe(interval)
    start, end = query_range(tf, start, end)
    read = partial(read_candles_json, prefer=prefer)
    return render(await service.get_candles(instrument, tf, start, end, read=read))


@router.post(
    "",
    response_model=CandleResponse,
    summary="Candles for an instrument (specification body)",
    description=_DOC,
    responses={**WITH_BODY, **RANGE_ERRORS},
    openapi_extra=RANGE_LIMITS,
)
async def post_candles(body: CandleRequest, service: ServiceDep) -> Response:
    return render(
        await service.get_candles(
            body.instrument_token, body.interval, body.from_date, body.to_date, read=read_candles_json
        )
    )
