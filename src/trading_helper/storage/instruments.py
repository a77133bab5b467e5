"""Instrument master: load a broker's list beside the old one and switch in one transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg

from trading_helper.errors import InvalidReference, UnknownInstrument, ValidationError
from trading_helper.instruments import refs
from trading_helper.models import Instrument
from trading_helper.storage import sql_instruments
from trading_helper.storage.db import Connection

_LOAD_TABLE = """
CREATE TEMP TABLE instrument_load (
    exchange text, tradingsymbol text, name text, segment text, instrument_type text, expiry date,
    strike double precision, option_type text, lot_size integer, tick_size double precision,
    broker_token text, broker_aux_id text
) ON COMMIT DROP
"""
_LOAD_COLUMNS = (
    "exchange",
    "tradingsymbol",
    "name",
    "segment",
    "instrument_type",
    "expiry",
    "strike",
    "option_type",
    "lot_size",
    "tick_size",
    "broker_token",
    "broker_aux_id",
)


async def sync_instruments(
    conn: Connection, broker: str, instruments: Sequence[Instrument], *, mark_expired: bool = True
) -> int:
    """Upsert ``instruments`` with their ``broker`` ids; ones the broker no longer lists are
    flagged expired (never deleted: their ticks and candles stay addressable)."""
    records = [
        (
            i.exchange,
            i.tradingsymbol,
            i.name,
            i.segment,
            i.instrument_type,
            i.expiry,
            i.strike,
            i.option_type or None,
            max(1, i.lot_size),
            i.tick_size if i.tick_size > 0 else 0.05,
            i.broker_ids.get(broker),
            i.broker_aux_ids.get(broker),
        )
        for i in instruments
    ]
    async with conn.transaction():
        await conn.execute(_LOAD_TABLE)
        await conn.copy_records_to_table("instrument_load", records=records, columns=_LOAD_COLUMNS)
        await conn.execute(sql_instruments.UPSERT_INSTRUMENTS)
        await conn.execute(sql_instruments.UPSERT_BROKER_IDS, broker)
        if mark_expired:
            await conn.execute(sql_instruments.MARK_EXPIRED, broker)
    return len(records)


async def lookup_tokens(conn: Connection, broker: str, tokens: Iterable[str]) -> dict[str, int]:
    """Broker token/symbol -> our instrument id, for the tokens that are known."""
    rows = await conn.fetch(sql_instruments.LOOKUP_BROKER_TOKENS, broker, list(tokens))
    return {r["broker_token"]: r["instrument_id"] for r in rows}


def _to_instrument(row: asyncpg.Record, broker_rows: Iterable[asyncpg.Record]) -> Instrument:
    inst = Instrument(
        id=row["id"],
        exchange=row["exchange"],
        tradingsymbol=row["tradingsymbol"],
        name=row["name"],
        segment=row["segment"],
        instrument_type=row["instrument_type"],
        expiry=row["expiry"],
        strike=row["strike"],
        option_type=row["option_type"],
        lot_size=row["lot_size"],
        tick_size=row["tick_size"],
        expired=row["expired"],
    )
    for b in broker_rows:
        inst.broker_ids[b["broker"]] = b["broker_token"]
        if b["broker_aux_id"]:
            inst.broker_aux_ids[b["broker"]] = b["broker_aux_id"]
    return inst


async def get_instrument(conn: Connection, instrument_id: int) -> Instrument:
    row = await conn.fetchrow(sql_instruments.GET_INSTRUMENT, instrument_id)
    if row is None:
        raise UnknownInstrument(f"no instrument with id {instrument_id}")
    return _to_instrument(row, await conn.fetch(sql_instruments.BROKER_IDS_OF, instrument_id))


async def _find(conn: Connection, ref: refs.Ref) -> asyncpg.Record | None:
    match ref:
        case refs.OurId(id=n):
            return await conn.fetchrow(sql_instruments.GET_INSTRUMENT, n)
        case refs.BrokerToken(broker=broker, token=token):
            found = await lookup_tokens(conn, broker, [token])
            return (
                await conn.fetchrow(sql_instruments.GET_INSTRUMENT, found[token]) if token in found else None
            )
        case refs.ExchangeSymbol(exchange=exchange, symbol=symbol):
            return await conn.fetchrow(sql_instruments.GET_INSTRUMENT_BY_SYMBOL, exchange, symbol)
        case refs.SymbolText(symbols=symbols):
            return await conn.fetchrow(sql_instruments.GET_INSTRUMENT_BY_SYMBOLS, list(symbols))
    return None


def _unknown(given: str | int, ref: refs.Ref) -> UnknownInstrument:
    meaning = refs.describe(ref)
    text = str(given)
    shown = repr(text) if text == meaning else f"{text!r} ({meaning})"
    return UnknownInstrument(f"unknown instrument {shown}", reference=str(given))


async def resolve_instrument(conn: Connection, ref: str | int, broker: str | None = None) -> Instrument:
    """The instrument a reference names (grammar: ``instruments/refs.py``); ``broker`` is the
    configured one, whose tokens bare numbers are. :class:`InvalidReference` outside the grammar,
    :class:`UnknownInstrument` (naming the reference) when nothing matches."""
    parsed = refs.parse_ref(ref, broker)
    for candidate in (parsed, *refs.fallbacks(parsed, broker)):
        row = await _find(conn, candidate)
        if row is not None:
            return _to_instrument(row, await conn.fetch(sql_instruments.BROKER_IDS_OF, row["id"]))
    raise _unknown(ref, parsed)


async def resolve_many(
    conn: Connection, given: Sequence[str | int], broker: str | None
) -> tuple[list[Instrument], list[ValidationError]]:
    """Each reference of a list: the instruments found (in order, once each) and one error per bad
    entry (invalid or unknown), so a caller can name every one."""
    found: dict[int, Instrument] = {}
    problems: list[ValidationError] = []
    for ref in given:
        try:
            inst = await resolve_instrument(conn, ref, broker)
        except ValidationError as exc:
            problems.append(exc)
            continue
        assert inst.id is not None
        found.setdefault(inst.id, inst)
    return list(found.values()), problems


def list_error(problems: Sequence[ValidationError], *, shown: int = 20) -> ValidationError:
    """One error naming every bad entry: invalid ones make it an :class:`InvalidReference`,
    else an :class:`UnknownInstrument`."""
    invalid = [p for p in problems if isinstance(p, InvalidReference)]
    unknown = [p for p in problems if not isinstance(p, InvalidReference)]
    parts = []
    for title, group in (("invalid", invalid), ("unknown", unknown)):
        if group:
            listed = "; ".join(
                p.message.removeprefix("invalid instrument reference ").removeprefix("unknown instrument ")
                for p in group[:shown]
            )
            parts.append(
                f"{title}: {listed}" + (f" (and {len(group) - shown} more)" if len(group) > shown else "")
            )
    cls = InvalidReference if invalid else UnknownInstrument
    return cls("instrument references not accepted: " + " | ".join(parts))
