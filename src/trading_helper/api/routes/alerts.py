"""Alert rules: ``POST/GET/PATCH/DELETE /api/alerts`` and ``GET /api/alerts/{id}/history``.

A rule is checked by ``alerts/rules.py`` before it is stored (422 ``invalid_alert`` with a
``reason`` when it cannot be evaluated), counted against ``ALERTS_MAX_RULES`` (409
``alert_limit``), and its instruments are subscribed (persisted, like
``POST /api/instruments/subscribe``). The running alert service follows the change at once.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from trading_helper.alerts.rules import CHANNEL_TYPES, MAX_COOLDOWN_S, parse_rule
from trading_helper.alerts.service import AlertService
from trading_helper.api.deps import RuntimeDep
from trading_helper.api.openapi import WITH_BODY, WITH_PARAMS
from trading_helper.api.routes.instruments import persist_subscriptions, resolve_ids
from trading_helper.api.runtime import Runtime
from trading_helper.api.schemas import TEXT_PATTERN, ErrorOut, InstrumentRef, InvalidRequestOut
from trading_helper.config import Settings
from trading_helper.errors import AlertLimitReached, UnknownAlert
from trading_helper.storage import sql_alerts

router = APIRouter(prefix="/api/alerts", tags=["alerts"])

On = Literal["tick", "1m", "5m", "15m", "1h", "1d"]
Op = Literal[">", ">=", "<", "<=", "crosses_above", "crosses_below"]
SeriesText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=60,
        pattern=r"^[A-Za-z0-9_:.]+$",
        description="on ticks: `ltp`, `change_pct`, `volume`, `oi`; on candles: `close`, `open`, "
        "`high`, `low`, `volume` or a study spec with an optional output (`ema:20`, `macd.signal`)",
    ),
]
RuleId = Annotated[int, Path(ge=1, le=2**62)]

_EXAMPLE: dict[str, Any] = {
    "instrument": "NSE:RELIANCE",
    "on": "5m",
    "left": "close",
    "op": "crosses_above",
    "right": "ema:20",
    "repeat": "every",
    "cooldown_s": 900,
    "channels": [{"type": "webhook", "target": "https://example.org/hook"}],
    "name": "RELIANCE above its 20-bar EMA",
}


class ChannelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["webhook", "telegram"]
    target: str = Field(min_length=1, max_length=500, pattern=TEXT_PATTERN, description="URL or chat id")


class AlertFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    on: On = Field("tick", description="`tick`, or the timeframe of the closed candles it watches")
    left: SeriesText
    op: Op
    value: float | None = Field(None, allow_inf_nan=False, description="a constant to compare with")
    right: SeriesText | None = Field(None, description="or a series to compare with")
    right_instrument: InstrumentRef | None = Field(None, description="the right series' instrument")
    repeat: Literal["once", "every"] = "once"
    cooldown_s: float = Field(60, ge=0, le=MAX_COOLDOWN_S, description="`every`: seconds between triggers")
    channels: list[ChannelIn] = Field(default_factory=list, max_length=5)
    name: str = Field("", max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")


class AlertIn(AlertFields):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})
    instrument: InstrumentRef
    enabled: bool = True


class AlertPatch(BaseModel):
    """Fields to change; the rule is checked again as a whole."""

    model_config = ConfigDict(extra="forbid")
    instrument: InstrumentRef | None = None
    on: On | None = None
    left: SeriesText | None = None
    op: Op | None = None
    value: float | None = Field(None, allow_inf_nan=False)
    right: SeriesText | None = None
    right_instrument: InstrumentRef | None = None
    repeat: Literal["once", "every"] | None = None
    cooldown_s: float | None = Field(None, ge=0, le=MAX_COOLDOWN_S)
    channels: list[ChannelIn] | None = Field(None, max_length=5)
    name: str | None = Field(None, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")
    enabled: bool | None = None


class AlertOut(AlertFields):
    model_config = ConfigDict(extra="ignore")
    id: int
    instrument: InstrumentRef
    instrument_id: int
    right_instrument_id: int | None
    enabled: bool
    condition: str
    created_at: datetime
    updated_at: datetime
    last_fired_at: datetime | None
    fired_count: int


class AlertList(BaseModel):
    items: list[AlertOut]
    total: int
    limit: int
    offset: int


class AttemptOut(BaseModel):
    channel: str
    attempt: int
    ok: bool
    status: int | None
    error: str | None
    attempted_at: datetime


class TriggerOut(BaseModel):
    id: int
    idempotency_key: str
    observed_at: datetime
    fired_at: datetime
    payload: dict[str, Any]
    attempts: list[AttemptOut]


class AlertHistory(BaseModel):
    rule_id: int
    items: list[TriggerOut]


_INVALID = {
    "model": InvalidRequestOut,
    "description": "the body does not fit the schema (`invalid_request`), a rule that cannot be "
    "evaluated (`invalid_alert`, with a `reason` such as `unknown_field`, `needs_value`, "
    "`webhook_not_configured`), or an instrument reference outside the grammar (`invalid_reference`)",
}
_UNKNOWN = {
    "model": ErrorOut,
    "description": "no such rule (`unknown_alert`), or an unknown instrument (`unknown_instrument`)",
}
_LIMIT = {"model": ErrorOut, "description": "ALERTS_MAX_RULES rules exist already (`alert_limit`)"}


def ready(settings: Settings) -> frozenset[str]:
    """The channel types this server can deliver to."""
    have = {
        "webhook": bool(settings.ALERT_WEBHOOK_SECRET.get_secret_value()),
        "telegram": bool(settings.TELEGRAM_BOT_TOKEN.get_secret_value()),
    }
    return frozenset(t for t in CHANNEL_TYPES if have[t])


def alert_out(row: asyncpg.Record) -> AlertOut:
    spec = json.loads(row["spec"])
    rule = parse_rule(
        spec,
        rule_id=row["id"],
        instrument_id=row["instrument_id"],
        right_instrument_id=row["right_instrument_id"],
    )
    return AlertOut(**{**dict(row), **spec, "condition": rule.describe()})


async def _checked(rt: Runtime, fields: dict[str, Any]) -> tuple[int, int | None, dict[str, Any]]:
    """(instrument id, right instrument id, the spec to store) of a rule that can be evaluated."""
    ids = await resolve_ids(rt, [fields["instrument"]])
    right_ref = fields.get("right_instrument")
    right_id = (await resolve_ids(rt, [right_ref]))[0] if right_ref is not None else None
    spec = {k: v for k, v in fields.items() if k != "enabled"}
    parse_rule(spec, rule_id=0, instrument_id=ids[0], right_instrument_id=right_id, ready=ready(rt.settings))
    return ids[0], right_id, spec


async def _follow(request: Request, rt: Runtime, rule_id: int, instrument_ids: list[int]) -> None:
    await persist_subscriptions(rt, instrument_ids)
    service: AlertService | None = request.app.state.alerts
    if service is not None:
        await service.changed(rule_id)


@router.post(
    "",
    response_model=AlertOut,
    status_code=201,
    summary="Create an alert rule",
    responses={**WITH_BODY, 422: _INVALID, 404: _UNKNOWN, 409: _LIMIT},
)
async def create_alert(body: AlertIn, request: Request, rt: RuntimeDep) -> AlertOut:
    fields = body.model_dump(mode="json")
    iid, right_id, spec = await _checked(rt, fields)
    async with rt.pool.acquire() as conn, conn.transaction():
        await conn.execute(sql_alerts.LOCK_RULES)
        if await conn.fetchval(sql_alerts.COUNT_RULES) >= rt.settings.ALERTS_MAX_RULES:
            raise AlertLimitReached(f"at most {rt.settings.ALERTS_MAX_RULES} alert rules (ALERTS_MAX_RULES)")
        row = await conn.fetchrow(sql_alerts.INSERT_RULE, iid, right_id, json.dumps(spec), body.enabled)
    assert row is not None  # INSERT ... RETURNING gives its row
    await _follow(request, rt, row["id"], [iid] + ([right_id] if right_id else []))
    return alert_out(row)


@router.get(
    "", response_model=AlertList, summary="List alert rules", responses={**WITH_PARAMS, 404: _UNKNOWN}
)
async def list_alerts(
    rt: RuntimeDep,
    instrument: Annotated[InstrumentRef | None, Query(description="only this instrument's rules")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> AlertList:
    iid = (await resolve_ids(rt, [instrument]))[0] if instrument is not None else None
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(sql_alerts.LIST_RULES, iid, limit, offset)
        total = await conn.fetchval(sql_alerts.COUNT_LISTED, iid)
    return AlertList(items=[alert_out(r) for r in rows], total=total, limit=limit, offset=offset)


async def _row(rt: Runtime, rule_id: int) -> asyncpg.Record:
    row = await rt.pool.fetchrow(sql_alerts.GET_RULE, rule_id)
    if row is None:
        raise UnknownAlert(f"no alert rule {rule_id}")
    return row


@router.get(
    "/{rule_id}", response_model=AlertOut, summary="One alert rule", responses={**WITH_PARAMS, 404: _UNKNOWN}
)
async def get_alert(rule_id: RuleId, rt: RuntimeDep) -> AlertOut:
    return alert_out(await _row(rt, rule_id))


@router.patch(
    "/{rule_id}",
    response_model=AlertOut,
    summary="Change an alert rule",
    responses={**WITH_BODY, 422: _INVALID, 404: _UNKNOWN},
)
async def patch_alert(rule_id: RuleId, body: AlertPatch, request: Request, rt: RuntimeDep) -> AlertOut:
    row = await _row(rt, rule_id)
    fields = {**json.loads(row["spec"]), **body.model_dump(mode="json", exclude_unset=True)}
    # a new constant replaces the right series, and a new right series the constant
    if body.value is not None and body.right is None:
        fields["right"] = fields["right_instrument"] = None
    if body.right is not None and body.value is None:
        fields["value"] = None
    enabled = row["enabled"] if body.enabled is None else body.enabled
    iid, right_id, spec = await _checked(rt, fields)
    updated = await rt.pool.fetchrow(
        sql_alerts.UPDATE_RULE, rule_id, iid, right_id, json.dumps(spec), enabled
    )
    if updated is None:
        raise UnknownAlert(f"no alert rule {rule_id}")
    await _follow(request, rt, rule_id, [iid] + ([right_id] if right_id else []))
    return alert_out(updated)


@router.delete(
    "/{rule_id}",
    status_code=204,
    summary="Delete an alert rule (its history is kept)",
    responses={**WITH_PARAMS, 404: _UNKNOWN},
)
async def delete_alert(rule_id: RuleId, request: Request, rt: RuntimeDep) -> Response:
    if await rt.pool.fetchval(sql_alerts.DELETE_RULE, rule_id) is None:
        raise UnknownAlert(f"no alert rule {rule_id}")
    service: AlertService | None = request.app.state.alerts
    if service is not None:
        await service.changed(rule_id)
    return Response(status_code=204)


@router.get(
    "/{rule_id}/history",
    response_model=AlertHistory,
    summary="A rule's triggers, newest first, each with every delivery attempt",
    responses={**WITH_PARAMS, 404: _UNKNOWN},
)
async def alert_history(
    rule_id: RuleId, rt: RuntimeDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> AlertHistory:
    async with rt.pool.acquire() as conn:
        if not await conn.fetchval(sql_alerts.RULE_EXISTS, rule_id):
            raise UnknownAlert(f"no alert rule {rule_id}")
        rows = await conn.fetch(sql_alerts.HISTORY, rule_id, limit)
    items = [
        TriggerOut(
            id=r["id"],
            idempotency_key=r["idempotency_key"],
            observed_at=r["observed_at"],
            fired_at=r["fired_at"],
            payload=json.loads(r["payload"]),
            attempts=[AttemptOut(**a) for a in json.loads(r["attempts"])],
        )
        for r in rows
    ]
    return AlertHistory(rule_id=rule_id, items=items)
