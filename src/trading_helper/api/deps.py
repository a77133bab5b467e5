"""Per-request access to the process's objects (kept on ``app.state`` by ``create_app``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

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
