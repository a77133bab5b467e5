"""Chain snapshots in the database: written once a minute by the recorder, read back for a past
minute (``?at=``), as the baseline of OI change and build-up, and as series.

A snapshot stores the chain document as it was computed (the chain-level figures in
``option_chain_snapshots``, each contract's quote and results in ``option_quote_snapshots``), so
the chain read back for a minute is the chain computed then, not a recomputation.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import asyncpg

from trading_helper.options.chain import SIDE_FIELDS, Baseline, smile
from trading_helper.storage import sql_options
from trading_helper.storage.db import Connection
from trading_helper.timeframes import IST

#: the per-side fields stored as their own column (instrument is the column tradingsymbol)
_STORED = tuple(f for f in SIDE_FIELDS if f != "instrument")


async def write_snapshot(conn: Connection, underlying_id: int, doc: dict[str, Any]) -> None:
    """Store a chain document (its ``as_of`` is the snapshot's minute), in one transaction."""
    as_of = datetime.fromisoformat(doc["as_of"])
    expiry = date.fromisoformat(doc["expiry"])
    rows = [
        (row["strike"], kind, side)
        for row in doc["strikes"]
        for kind, side in (("CE", row["ce"]), ("PE", row["pe"]))
        if side is not None
    ]
    columns: dict[str, list[Any]] = {c: [] for c in sql_options.QUOTE_COLUMNS}
    for strike, kind, side in rows:
        columns["as_of"].append(as_of)
        columns["underlying_id"].append(underlying_id)
        columns["expiry"].append(expiry)
        columns["tradingsymbol"].append(side["instrument"])
        columns["strike"].append(strike)
        columns["option_type"].append(kind)
        for name in _STORED:
            columns[name].append(side[name])
    async with conn.transaction():
        await conn.execute(sql_options.ENSURE_PARTITIONS, as_of, as_of)
        future = doc.get("future") or {}
        given = {"as_of": as_of, "underlying_id": underlying_id, "expiry": expiry}
        given |= {column: future.get(key) for column, key in sql_options.FUTURE_COLUMNS.items()}
        await conn.execute(
            sql_options.INSERT_CHAIN_SNAPSHOT,
            *[given[c] if c in given else doc[c] for c in sql_options.CHAIN_COLUMNS],
        )
        await conn.execute(sql_options.INSERT_QUOTE_SNAPSHOTS, *columns.values())


async def read_snapshot(
    conn: asyncpg.Connection | asyncpg.Pool, underlying: str, underlying_id: int, expiry: date, at: datetime
) -> dict[str, Any] | None:
    """The chain document of the last snapshot at or before ``at``; None when there is none."""
    head = await conn.fetchrow(sql_options.CHAIN_SNAPSHOT_AT, underlying_id, expiry, at)
    if head is None:
        return None
    rows = await conn.fetch(sql_options.QUOTE_SNAPSHOTS_AT, underlying_id, expiry, head["as_of"])
    strikes: dict[float, dict[str, Any]] = {}
    for r in rows:
        row = strikes.setdefault(r["strike"], {"strike": r["strike"], "ce": None, "pe": None})
        side = {"instrument": r["tradingsymbol"], **{name: r[name] for name in _STORED}}
        row["ce" if r["option_type"] == "CE" else "pe"] = side
    ordered = [strikes[k] for k in sorted(strikes)]
    doc: dict[str, Any] = {
        "underlying": underlying,
        "expiry": expiry.isoformat(),
        "as_of": head["as_of"].astimezone(IST).isoformat(),
    }
    for c in sql_options.CHAIN_COLUMNS:
        if c not in ("as_of", "underlying_id", "expiry") and c not in sql_options.FUTURE_COLUMNS:
            doc[c] = head[c]
    doc["strikes"] = ordered
    doc["smile"] = smile(ordered, doc["forward"])
    doc["future"] = (
        None
        if head["future_id"] is None
        else {key: head[column] for column, key in sql_options.FUTURE_COLUMNS.items()}
    )
    return doc


#: a cache of baseline rows: (underlying id, expiry, the snapshot's minute) -> its contracts' rows
BaselineCache = dict[tuple[int, date, datetime], dict[int, Baseline]]
_BASELINE_CACHE_MAX = 64


async def baseline(
    conn: asyncpg.Connection | asyncpg.Pool,
    underlying_id: int,
    expiry: date,
    since: datetime,
    until: datetime,
    cache: BaselineCache | None = None,
) -> tuple[datetime | None, dict[int, Baseline]]:
    """Each contract's (and the future's) last price and OI in the first snapshot of [since, until]
    (the window's start): the baseline of OI change and build-up. (None, {}) without a snapshot.
    With ``cache``, a snapshot's rows are read once: a snapshot is never rewritten (a second write
    of its minute keeps the first), so only the query naming the window's first one is repeated."""
    head = await conn.fetchrow(sql_options.FIRST_SNAPSHOT_IN, underlying_id, expiry, since, until)
    if head is None:
        return None, {}
    key = (underlying_id, expiry, head["as_of"])
    found = None if cache is None else cache.get(key)
    if found is None:
        rows = await conn.fetch(sql_options.QUOTE_SNAPSHOTS_AT, underlying_id, expiry, head["as_of"])
        found = {r["instrument_id"]: Baseline(ltp=r["ltp"], oi=r["oi"]) for r in rows}
        if head["future_id"] is not None:
            found[head["future_id"]] = Baseline(ltp=head["future_ltp"], oi=head["future_oi"])
        if cache is not None:
            if len(cache) >= _BASELINE_CACHE_MAX:
                cache.clear()
            cache[key] = found
    return head["as_of"], found


async def series(
    conn: asyncpg.Connection | asyncpg.Pool,
    underlying_id: int,
    expiry: date,
    metric: str,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[dict[str, Any]]:
    """One chain-level figure per snapshot in [start, end): ``[{"time", "value"}]``."""
    rows = await conn.fetch(sql_options.SERIES_SQL[metric], underlying_id, expiry, start, end, limit)
    return [{"time": r["as_of"].astimezone(IST).isoformat(), "value": r["value"]} for r in rows]
