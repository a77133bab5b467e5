"""The cluster bench's accounts: what the stand-in sent against what landed in the database.

A stored row names its tick by (instrument, frame number in open_interest), in tick_data or
quote_updates. Per connection, frames go out in order and reach the database in order (one
receiver, one stream, one writer at a time), so on a connection that ended (its collector killed,
or its shard handed over) everything up to the newest frame stored from it was received, and
what came after it was in flight: a coverage hole (backfilled from history), not a loss. On a
connection still open at the end, after the drain, every frame sent must be stored.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import asyncpg
import numpy as np

_ROWS = (
    "SELECT instrument_id, open_interest FROM tick_data "
    "UNION ALL SELECT instrument_id, open_interest FROM quote_updates"
)
_DEAD = "SELECT count(*) FROM tick_rejects"
_ROW = np.dtype([("n", ">i2"), ("l1", ">i4"), ("iid", ">i4"), ("l2", ">i4"), ("oi", ">i8")])
_SHIFT = np.int64(1 << 32)


@dataclass
class Accounts:
    sent: int
    stored: int
    received: int
    in_flight: int
    lost: int
    duplicated: int
    dead_lettered: int


async def stored_keys(conn: asyncpg.Connection) -> np.ndarray:
    """instrument_id << 32 | frame of every stored row (sorted, with repeats)."""
    out = io.BytesIO()
    await conn.copy_from_query(_ROWS, output=out, format="binary")
    raw = out.getvalue()[19:-2]  # the binary COPY header and trailer
    rows = np.frombuffer(raw, dtype=_ROW)
    keys = rows["iid"].astype(np.int64) * _SHIFT + rows["oi"].astype(np.int64)
    keys.sort()
    return keys


async def account(
    conn: asyncpg.Connection,
    ranges: dict[int, dict[int, list[list[int]]]],
    ids: dict[int, int],
    open_at_end: set[int],
) -> Accounts:
    """``ranges``: connection -> token -> sent frame ranges; ``ids``: token -> instrument id."""
    keys = await stored_keys(conn)
    unique, counts = np.unique(keys, return_counts=True)
    sent = received = lost = 0
    for number, by_token in ranges.items():
        spans = [(ids[t], lo, hi) for t, lst in by_token.items() if t in ids for lo, hi in lst]
        if not spans:
            continue
        arr = np.array(spans, dtype=np.int64)
        lo_keys = arr[:, 0] * _SHIFT + arr[:, 1]
        hi_keys = arr[:, 0] * _SHIFT + arr[:, 2]
        first = np.searchsorted(unique, lo_keys, side="left")
        after = np.searchsorted(unique, hi_keys, side="right")
        sizes = arr[:, 2] - arr[:, 1] + 1
        sent += int(sizes.sum())
        if number in open_at_end:
            cutoff = None
        else:  # the newest frame stored from this connection
            has = after > first
            cutoff = int((unique[after[has] - 1] % _SHIFT).max()) if has.any() else -1
        for (iid, lo, hi), a in zip(arr.tolist(), first.tolist(), strict=True):
            top = hi if cutoff is None else min(hi, cutoff)
            if top < lo:
                continue
            n_expected = top - lo + 1
            stored_here = int(np.searchsorted(unique, iid * int(_SHIFT) + top, side="right")) - a
            received += n_expected
            lost += max(0, n_expected - stored_here)
    dead = int(await conn.fetchval(_DEAD))
    return Accounts(
        sent=sent,
        stored=len(unique),
        received=received,
        in_flight=sent - received,
        lost=max(0, lost - dead),
        duplicated=int((counts - 1).sum()),
        dead_lettered=dead,
    )
