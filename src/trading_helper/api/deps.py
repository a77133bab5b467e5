"""Per-request access to the process's objects (kept on ``app.state`` by ``create_app``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

from trading_helper.api.runtime import Runtime
from trading_helper.candles.service import CandleService


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def candle_service(request: Request) -> CandleService:
    service: CandleService = request.app.state.candles
    return service


RuntimeDep = Annotated[Runtime, Depends(runtime)]
ServiceDep = Annotated[CandleService, Depends(candle_service)]


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def refuse_unknown_query(request: Request) -> None:
    """A query parameter the route does not declare is a 422 naming it: ``?symbol=X`` for ``?q=X``
    would otherwise answer every instrument as if nothing had been asked."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if not isinstance(dependant, Dependant):
        return
    known = _query_names(dependant)
    expected = f"expected one of: {', '.join(sorted(known))}" if known else "this operation takes none"
    unknown = [name for name in dict.fromkeys(request.query_params) if name not in known]
    if unknown:
        raise RequestValidationError([{"loc": ("query", name), "type": "extra_forbidden",
                                       "msg": f"unknown query parameter ({expected})"} for name in unknown])
