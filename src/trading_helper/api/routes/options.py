"""Option chains: expiries, the chain (live, or a past minute's snapshot), series of the chain's
figures, and following a chain (N strikes each side of ATM, kept around ATM)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from trading_helper.api.deps import RuntimeDep
from trading_helper.api.fastjson import json_response
from trading_helper.api.openapi import WITH_BODY, WITH_PARAMS, Responses
from trading_helper.api.schemas import ErrorOut, RefText
from trading_helper.api.schemas_options import (
    ChainOut,
    ExpiriesOut,
    Metric,
    OptionSubscribeIn,
    OptionSubscribeOut,
    SeriesOut,
)
from trading_helper.options.service import OptionsService

router = APIRouter(prefix="/api/options", tags=["options"])

_NOT_FOUND: Responses = {
    404: {
        "model": ErrorOut,
        "description": "unknown underlying, no options for it (`no_options`), or no snapshot at `at` (`no_snapshot`)",
    }
}
_RANGE: Responses = {
    400: {"model": ErrorOut, "description": "a time out of range, or from >= to (`invalid_range`)"}
}
_Underlying = Annotated[
    RefText,
    Query(
        description="the index or stock (EXCHANGE:SYMBOL, our id, a broker token)", examples=["NSE:NIFTY 50"]
    ),
]
_Expiry = Annotated[date | None, Query(description="YYYY-MM-DD; default: the nearest expiry")]


def _service(request: Request) -> OptionsService:
    service: OptionsService = request.app.state.options
    return service


def _json(doc: dict[str, Any]) -> Response:
    # the chain is built as plain data already; a response model would validate it once more
    return json_response(doc)


@router.get(
    "/expiries",
    response_model=ExpiriesOut,
    summary="Expiries of an underlying's options",
    responses={**WITH_PARAMS, **_NOT_FOUND},
)
async def get_expiries(request: Request, rt: RuntimeDep, underlying: _Underlying) -> Response:
    return _json(await _service(request).expiries(underlying))


@router.get(
    "/chain",
    response_model=ChainOut,
    summary="The option chain: prices, OI, IV and Greeks per strike",
    description="Live from the latest quotes of the subscribed strikes (no broker call), or with `at` "
    "the snapshot of that minute (the last at or before it). IV and Greeks by Black-76 on the forward "
    "implied from put-call parity at the ATM strikes (the future's price when parity cannot be "
    "formed), the rate `OPTIONS_RATE`, calendar time to the exchange's expiry time. OI change and "
    "build-up are measured from the day's first snapshot, or from `window` minutes ago.",
    responses={**WITH_PARAMS, **_NOT_FOUND, **_RANGE},
)
async def get_chain(
    request: Request,
    rt: RuntimeDep,
    underlying: _Underlying,
    expiry: _Expiry = None,
    at: Annotated[datetime | None, Query(description="a past minute, ISO 8601; naive = IST")] = None,
    window: Annotated[int | None, Query(ge=1, le=1440, description="minutes the OI change spans")] = None,
) -> Response:
    return _json(await _service(request).chain(underlying, expiry, at, window))


@router.get(
    "/series",
    response_model=SeriesOut,
    summary="A chain figure over time, one point per snapshot",
    responses={**WITH_PARAMS, **_NOT_FOUND, **_RANGE},
)
async def get_series(
    request: Request,
    rt: RuntimeDep,
    underlying: _Underlying,
    metric: Annotated[Metric, Query()],
    expiry: _Expiry = None,
    start: Annotated[datetime | None, Query(alias="from", description="default: the day's start")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="default: now")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 5000,
) -> Response:
    return _json(await _service(request).series(underlying, expiry, metric, start, end, limit))


@router.post(
    "/subscribe",
    response_model=OptionSubscribeOut,
    summary="Follow a chain: N strikes each side of ATM, kept around ATM, snapshotted",
    description="Subscribes the strikes (and the underlying and its future), persisted like any "
    "subscription; as the ATM moves, strikes it nears are subscribed and this follow's strikes "
    "left more than twice N away are unsubscribed. The chain is snapshotted every "
    "`OPTIONS_SNAPSHOT_INTERVAL_S`.",
    responses={**WITH_BODY, **_NOT_FOUND},
)
async def subscribe_chain(request: Request, rt: RuntimeDep, body: OptionSubscribeIn) -> Response:
    return _json(await _service(request).subscribe(body.underlying, body.expiry, body.strikes))
