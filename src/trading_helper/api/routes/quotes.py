"""Latest quote of an instrument, from the ingest service's Redis hash (``th:quotes``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from trading_helper.api.deps import RuntimeDep, ServiceDep
from trading_helper.api.openapi import WITH_PARAMS
from trading_helper.api.schemas import ErrorOut, RefText
from trading_helper.errors import BufferUnavailable, UnknownInstrument
from trading_helper.ingest import codec, keys

router = APIRouter(prefix="/api/quotes", tags=["quotes"])

_EXAMPLE = {
    "instrument_id": 1,
    "exchange_ts": "2025-10-17T10:02:03+05:30",
    "received_ts": "2025-10-17T10:02:03.412+05:30",
    "last_price": 1378.4,
    "last_quantity": 5,
    "volume": 2314567,
    "average_price": 1376.92,
    "open_interest": None,
    "bid_price": 1378.3,
    "bid_quantity": 120,
    "ask_price": 1378.4,
    "ask_quantity": 75,
    "depth": {
        "bids": [{"price": 1378.3, "quantity": 120, "orders": 3}],
        "asks": [{"price": 1378.4, "quantity": 75, "orders": 2}],
    },
}


@router.get(
    "/{instrument}",
    summary="Latest tick of an instrument",
    responses={
        **WITH_PARAMS,
        200: {"content": {"application/json": {"example": _EXAMPLE}}},
        404: {"model": ErrorOut, "description": "unknown instrument, or no tick yet"},
        503: {"model": ErrorOut, "description": "Redis is not configured or down"},
    },
)
async def latest_quote(
    instrument: Annotated[RefText, Path(description="our id, EXCHANGE:SYMBOL, or a broker token")],
    rt: RuntimeDep,
    service: ServiceDep,
) -> dict[str, Any]:
    inst = await service.resolve(instrument)
    if rt.redis is None:
        raise BufferUnavailable("live quotes need Redis (REDIS_URL), which is not configured")
    value = await rt.redis.hget(keys.QUOTES, str(inst.id))
    if value is None:
        raise UnknownInstrument(
            f"no tick received yet for {inst.exchange}:{inst.tradingsymbol}", code="no_quote"
        )
    if not isinstance(value, bytes):
        raise BufferUnavailable("the Redis client must be created with decode_responses=False")
    return codec.tick_to_json(codec.decode_quote(value))
