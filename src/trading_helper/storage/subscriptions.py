"""Subscription changes between processes: PostgreSQL's NOTIFY ``subscriptions_changed``.

Subscriptions live in the ``subscriptions`` table, written by any API replica. The transaction that
changes the set also sends ``NOTIFY subscriptions_changed, '<JSON list of the instruments' ids>'``
(:func:`notify_changed`), delivered to every listener when it commits and never when it rolls back.
A payload names instruments whose subscription changed, not what changed: a listener reads their
rows (:func:`subscribed_among`) and subscribes or unsubscribes to match, so a repeated or reordered
notification is harmless. A listener that was not connected reads the whole set instead
(:func:`subscribed_ids`): NOTIFY is not queued for absent listeners.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from trading_helper.storage import sql_instruments
from trading_helper.storage.db import Connection

CHANNEL = sql_instruments.SUBSCRIPTIONS_CHANNEL
#: ids per notification: PostgreSQL caps a payload at 8000 bytes (an id is at most 11 characters)
IDS_PER_NOTIFY = 500


async def notify_changed(conn: Connection, instrument_ids: Sequence[int]) -> None:
    """NOTIFY the change of these instruments' subscriptions (inside the changing transaction)."""
    ids = sorted(set(instrument_ids))
    for at in range(0, len(ids), IDS_PER_NOTIFY):
        await conn.execute(sql_instruments.NOTIFY_SUBSCRIPTIONS, json.dumps(ids[at : at + IDS_PER_NOTIFY]))


def parse_changed(payload: str) -> list[int] | None:
    """The ids of a notification's payload; None when it is not a JSON list of ids."""
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        return None
    return value


async def subscribed_among(conn: Connection, instrument_ids: Sequence[int]) -> set[int]:
    """Which of ``instrument_ids`` are subscribed now."""
    rows = await conn.fetch(sql_instruments.SUBSCRIBED_AMONG, list(instrument_ids))
    return {int(r["instrument_id"]) for r in rows}


async def subscribed_ids(conn: Connection) -> set[int]:
    """Every subscribed instrument."""
    return {int(r["instrument_id"]) for r in await conn.fetch(sql_instruments.SUBSCRIBED_IDS)}


async def ping(conn: Connection, timeout_s: float) -> None:
    """A round trip on a listening connection: a silently dead one raises instead of waiting."""
    await conn.fetchval(sql_instruments.PING, timeout=timeout_s)
