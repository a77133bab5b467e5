"""Instruments: search, sync from the broker, and the persisted subscription set."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request

from trading_helper.api.deps import RuntimeDep, ServiceDep
from trading_helper.api.openapi import WITH_BODY, WITH_PARAMS
from trading_helper.api.runtime import Runtime
from trading_helper.api.schemas import (
    TEXT_PATTERN,
    ErrorOut,
    InstrumentList,
    InstrumentPage,
    Subscribed,
    Subscription,
    SubscriptionList,
    SyncResult,
    Unsubscribed,
)
from trading_helper.errors import ConfigError
from trading_helper.instruments import refs
from trading_helper.storage import sql_instruments
from trading_helper.storage.instruments import list_error, resolve_many, sync_instruments
from trading_helper.storage.subscriptions import notify_changed

router = APIRouter(prefix="/api/instruments", tags=["instruments"])

_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "an instrument reference names no instrument (each one is named)"}
}

Text = Annotated[str | None, Query(max_length=64, pattern=TEXT_PATTERN)]


def instrument_of(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    out["broker_ids"] = (
        json.loads(out["broker_ids"]) if isinstance(out["broker_ids"], str) else out["broker_ids"]
    )
    return out


@router.get("", response_model=InstrumentPage, summary="Search instruments", responses=WITH_PARAMS)
async def list_instruments(
    rt: RuntimeDep,
    q: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=TEXT_PATTERN,
            description="a trading symbol, part of one, a name or an alias (`BANKNIFTY`); "
            "exact symbols first, then prefixes, then the rest, indices "
            "and near-month futures first",
        ),
    ] = None,
    exchange: Text = None,
    segment: Text = None,
    expiry: Annotated[date | None, Query(description="contracts expiring on this date")] = None,
    expired: Annotated[bool, Query(description="include expired contracts")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    text = refs.search_text(q) if q else None
    args = (
        sql_instruments.like_text(text) if text else None,
        exchange.upper() if exchange else None,
        segment.upper() if segment else None,
        expiry,
        expired,
        list(refs.symbols_of(text)) if text else [],
    )
    async with rt.reader.acquire() as conn:
        rows = await conn.fetch(sql_instruments.LIST_INSTRUMENTS, *args, limit, offset)
        total = await conn.fetchval(sql_instruments.COUNT_INSTRUMENTS, *args)
    return {"items": [instrument_of(r) for r in rows], "total": total, "limit": limit, "offset": offset}


@router.post(
    "/sync",
    response_model=SyncResult,
    summary="Load the broker's instrument master",
    responses={502: {"model": ErrorOut, "description": "the broker failed or answered badly"}},
    description="Fetches the configured broker's instrument master and upserts it; contracts the "
    "broker no longer lists are marked expired, never deleted.",
)
async def sync(request: Request, rt: RuntimeDep, service: ServiceDep) -> SyncResult:
    if rt.broker is None:
        raise ConfigError("no broker is configured (BROKER): cannot sync instruments")
    instruments = await rt.broker.fetch_instruments()
    async with rt.pool.acquire() as conn:
        count = await sync_instruments(conn, rt.broker.name, instruments)
    service.forget_instruments()
    request.app.state.options.forget_instruments()
    return SyncResult(broker=rt.broker.name, count=count)


async def resolve_ids(rt: Runtime, given: Sequence[int | str]) -> list[int]:
    """Our ids for ``given`` (the reference grammar, ``instruments/refs.py``); every bad entry is
    named at once (422 when one is outside the grammar, else 404)."""
    async with rt.pool.acquire() as conn:
        found, problems = await resolve_many(conn, given, rt.broker.name if rt.broker is not None else None)
    if problems:
        raise list_error(problems)
    return [i.id for i in found if i.id is not None]


@router.post(
    "/subscribe",
    response_model=Subscribed,
    summary="Follow instruments live",
    responses={
        **WITH_BODY,
        **_UNKNOWN,
        409: {"model": ErrorOut, "description": "the broker's subscription limit"},
    },
    description="Persisted: the ingest service re-subscribes the set on every start, and one running "
    "in another process (behind `serve --no-ingest` replicas) is told at once (NOTIFY "
    "`subscriptions_changed`).",
)
async def subscribe(body: InstrumentList, rt: RuntimeDep) -> Subscribed:
    ids = await resolve_ids(rt, body.instruments)
    await persist_subscriptions(rt, ids)
    return Subscribed(subscribed=ids)


async def persist_subscriptions(rt: Runtime, ids: list[int]) -> None:
    """Follow ``ids`` live, persisted (also for the instruments of an alert rule)."""
    async with rt.pool.acquire() as conn, conn.transaction():
        await conn.execute(sql_instruments.SUBSCRIBE, ids)
        await notify_changed(conn, ids)  # the ingest service of another process, at the commit
        if rt.ingest is not None:
            # inside the transaction: a refusal (subscription limit) leaves nothing persisted
            await rt.ingest.subscribe(ids)


@router.post(
    "/unsubscribe",
    response_model=Unsubscribed,
    summary="Stop following instruments",
    responses={**WITH_BODY, **_UNKNOWN},
)
async def unsubscribe(body: InstrumentList, rt: RuntimeDep) -> Unsubscribed:
    ids = await resolve_ids(rt, body.instruments)
    async with rt.pool.acquire() as conn, conn.transaction():
        await conn.execute(sql_instruments.UNSUBSCRIBE, ids)
        await notify_changed(conn, ids)
    if rt.ingest is not None:
        await rt.ingest.unsubscribe(ids)
    return Unsubscribed(unsubscribed=ids)


@router.get("/subscriptions", response_model=SubscriptionList, summary="The persisted subscription set")
async def subscriptions(rt: RuntimeDep) -> dict[str, Any]:
    rows = await rt.pool.fetch(sql_instruments.LIST_SUBSCRIPTIONS)
    items = [Subscription(**instrument_of(r)) for r in rows]
    return {"items": items, "total": len(items)}
