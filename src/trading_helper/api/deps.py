"""Per-request access to the process's objects (kept on ``app.state`` by ``create_app``).

Both dependencies hold the route inside :func:`mapped_errors`, so a database or Redis failure
anywhere below a route reaches the error handlers as the tree's error (``api/errors.py`` maps only
``TradingHelperError``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

from trading_helper.api.runtime import Runtime
from trading_helper.candles.service import CandleService
from trading_helper.ingest.redisconn import redis_errors
from trading_helper.storage.db import db_errors


@contextmanager
def mapped_errors(request: Request) -> Iterator[None]:
    """The route's low-level database and Redis errors as ``StorageError`` / ``BufferUnavailable``."""
    what = f"{request.method} {request.url.path}"
    with redis_errors(f"{what}: Redis call failed"), db_errors(f"{what}: database call failed"):
        yield


# async generators: FastAPI runs a plain generator dependency in its thread pool, two thread
# hand-offs per request (entering and leaving) for what is a dictionary read
async def runtime(request: Request) -> AsyncIterator[Runtime]:
    rt: Runtime = request.app.state.runtime
    with mapped_errors(request):
        yield rt


async def candle_service(request: Request) -> AsyncIterator[CandleService]:
    service: CandleService = request.app.state.candles
    with mapped_errors(request):
        yield service


# scope="function": the mapping ends when the route function returns, before the answer is sent
# (the default, "request", would hold the dependency open until after the response)
RuntimeDep = Annotated[Runtime, Depends(runtime, scope="function")]
ServiceDep = Annotated[CandleService, Depends(candle_service, scope="function")]


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
        raise RequestValidationError(
            [
                {
                    "loc": ("query", name),
                    "type": "extra_forbidden",
                    "msg": f"unknown query parameter ({expected})",
                }
                for name in unknown
            ]
        )
