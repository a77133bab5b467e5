"""Reconciliation summary: ``GET /api/reconcile?date=`` (see ``reconcile/``)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query

from trading_helper.api.deps import RuntimeDep
from trading_helper.api.openapi import WITH_PARAMS
from trading_helper.reconcile.summary import MAX_DIFFERENCES, day_summary

router = APIRouter(prefix="/api/reconcile", tags=["reconcile"])


@router.get(
    "",
    summary="Live vs broker 1m candles of one trading day",
    description=(
        "The reconciliation of one IST trading day (`trading-helper reconcile --date`): each run with its "
        "progress (`done` of `instruments`), per subscribed instrument the buckets compared (only those "
        "wholly inside live coverage), the broker candles left out for lack of coverage (`uncovered`) and "
        "the differences by kind (`live_missing`, `broker_missing`, `open`, `high`, `low`, `close`, "
        f"`volume`, `open_interest`); with `differences=true` up to {MAX_DIFFERENCES} of them."
    ),
    responses=WITH_PARAMS,
)
async def reconcile_summary(
    rt: RuntimeDep,
    day: Annotated[date, Query(alias="date", description="IST trading day", examples=["2026-11-27"])],
    differences: Annotated[bool, Query(description="list the differences too")] = False,
    instrument_id: Annotated[
        int | None, Query(ge=1, le=2_147_483_647, description="only this instrument's")
    ] = None,
) -> dict[str, Any]:
    return await day_summary(rt.pool, day, differences=differences, instrument_id=instrument_id)
