"""The cluster bench's accounts: what the stand-in sent against what landed in the database.

A stored row names its tick by (instrument, frame number in open_interest), in tick_data or
quote_updates. Per connection, frames go out in order and reach the database in order (one
receiver, one stream, one writer at a time), so on a connection that ended (its collector killed,
or its shard handed over) everything up to the newest frame stored from it was received, and
what came after it was in flight: a coverage hole (backfilled from history), not a loss. On a
connection still open at the end, after the drain (:func:`drain`: no entry left unread or
unacknowledged in any stream), every frame sent must be stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import time
from collections import Counter
from dataclasses import dataclass

import asyncpg
import numpy as np
import redis.asyncio as aioredis

from trading_helper.ingest.lags import percentile

_ROWS = (
    "SELECT instrument_id, open_interest FROM tick_data "
    "UNION ALL SELECT instrument_id, open_interest FROM quote_updates"
)
_DEAD = "SELECT count(*) FROM tick_rejects"
_ROWS_OF = (
    "SELECT 'tick_data' AS rel, time, received_at FROM tick_data WHERE instrument_id = $1 AND open_interest = $2 "
    "UNION ALL SELECT 'quote_updates', time, received_at FROM quote_updates "
    "WHERE instrument_id = $1 AND open_interest = $2 ORDER BY 3"
)
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
    #: a few of each, to see where they came from
    duplicated_samples: list[dict[str, object]]
    lost_samples: list[dict[str, object]]
    #: the stored keys (instrument id << 32 | frame), sorted, each once
    unique: np.ndarray


async def stored_keys(conn: asyncpg.Connection) -> np.ndarray:
    """instrument_id << 32 | frame of every stored row (sorted, with repeats)."""
    out = io.BytesIO()
    await conn.copy_from_query(_ROWS, output=out, format="binary")
    raw = out.getvalue()[19:-2]  # the binary COPY header and trailer
    rows = np.frombuffer(raw, dtype=_ROW)
    keys = rows["iid"].astype(np.int64) * _SHIFT + rows["oi"].astype(np.int64)
    keys.sort()
    return keys


def split(
    ranges: dict[int, dict[int, list[list[int]]]],
) -> tuple[dict[int, list[tuple[int, int, int]]], list[tuple[int, int, int]]]:
    """The sent frame ranges cut where two connections carried a token at once (an owner's socket
    still open while the next owner's subscribed): per connection its own pieces (token, lo, hi),
    and the shared pieces, which say nothing about either connection's order."""
    by_token: dict[int, list[tuple[int, int, int]]] = {}
    for number, tokens in ranges.items():
        for token, sent_spans in tokens.items():
            by_token.setdefault(token, []).extend((lo, hi, number) for lo, hi in sent_spans)
    own: dict[int, list[tuple[int, int, int]]] = {}
    shared: list[tuple[int, int, int]] = []
    for token, spans in by_token.items():
        if len(spans) == 1:
            lo, hi, number = spans[0]
            own.setdefault(number, []).append((token, lo, hi))
            continue
        cuts = sorted({lo for lo, _, _ in spans} | {hi + 1 for _, hi, _ in spans})
        for a, b in itertools.pairwise(cuts):
            carriers = [n for lo, hi, n in spans if lo <= a and hi >= b - 1]
            if len(carriers) == 1:
                own.setdefault(carriers[0], []).append((token, a, b - 1))
            elif carriers:
                shared.append((token, a, b - 1))
    return own, shared


def _stored_in(unique: np.ndarray, iid: int, lo: int, hi: int) -> int:
    base = iid * int(_SHIFT)
    return int(
        np.searchsorted(unique, base + hi, side="right") - np.searchsorted(unique, base + lo, side="left")
    )


async def account(
    conn: asyncpg.Connection,
    ranges: dict[int, dict[int, list[list[int]]]],
    ids: dict[int, int],
    open_at_end: set[int],
) -> Accounts:
    """``ranges``: connection -> token -> sent frame ranges; ``ids``: token -> instrument id."""
    keys = await stored_keys(conn)
    unique, counts = np.unique(keys, return_counts=True)
    sent = sum(hi - lo + 1 for tokens in ranges.values() for spans in tokens.values() for lo, hi in spans)
    own, shared = split(ranges)
    received = lost = 0
    lost_samples: list[dict[str, object]] = []
    for number, pieces in own.items():
        spans = [(ids[t], lo, hi) for t, lo, hi in pieces if t in ids]
        if not spans:
            continue
        arr = np.array(spans, dtype=np.int64)
        first = np.searchsorted(unique, arr[:, 0] * _SHIFT + arr[:, 1], side="left")
        after = np.searchsorted(unique, arr[:, 0] * _SHIFT + arr[:, 2], side="right")
        if number in open_at_end:
            cutoff = None
        else:  # the newest frame stored from this connection (of the pieces only it carried)
            has = after > first
            cutoff = int((unique[after[has] - 1] % _SHIFT).max()) if has.any() else -1
        for iid, lo, hi in spans:
            top = hi if cutoff is None else min(hi, cutoff)
            if top >= lo:
                received += top - lo + 1
                missing = top - lo + 1 - _stored_in(unique, iid, lo, top)
                lost += max(0, missing)
                if missing > 0 and len(lost_samples) < 5:
                    lost_samples.append(
                        {"connection": number, "instrument_id": iid, "frames": [lo, top], "missing": missing,
                         "cutoff": cutoff, "open_at_end": number in open_at_end}
                    )  # fmt: skip
    for token, lo, hi in shared:  # stored by either: received; else in flight on both
        if token in ids:
            received += _stored_in(unique, ids[token], lo, hi)
    dead = int(await conn.fetchval(_DEAD))
    dup_samples = []
    for key in unique[counts > 1][:3].tolist():
        iid, frame = divmod(key, int(_SHIFT))
        rows = await conn.fetch(_ROWS_OF, iid, frame)
        dup_samples.append(
            {"instrument_id": iid, "frame": frame, "rows": [[r["rel"], str(r["time"]), str(r["received_at"])] for r in rows]}
        )  # fmt: skip
    return Accounts(
        sent=sent,
        stored=len(unique),
        received=received,
        in_flight=sent - received,
        lost=max(0, lost - dead),
        duplicated=int((counts - 1).sum()),
        dead_lettered=dead,
        duplicated_samples=dup_samples,
        lost_samples=lost_samples,
        unique=unique,
    )


def by_step(at: list[tuple[str, Counter[int]]], final: Counter[int]) -> dict[str, dict[str, float | None]]:
    """p99 (ms) and count of the ticks committed between consecutive steps of the schedule:
    ``at`` holds each step's name and the cumulative histogram at its start, ``final`` the
    histogram at the end ("steady": before the first step)."""
    marks = [("steady", Counter[int]()), *at]
    ends = [h for _, h in at] + [final]
    out: dict[str, dict[str, float | None]] = {}
    for (name, begin), end in zip(marks, ends, strict=True):
        part = end - begin
        out[name] = {"p99": percentile(part, 0.99), "ticks": float(sum(part.values()))}
    return out


async def drain(redis: aioredis.Redis, streams: list[str], timeout_s: float = 180.0) -> bool:
    """Wait until no stream has entries pending or unread by the writers (3 quiet looks in a row)."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline:
        backlog = 0
        for stream in streams:
            with contextlib.suppress(Exception):
                for group in await redis.xinfo_groups(stream):
                    backlog += int(group.get("pending") or 0) + int(group.get("lag") or 0)
        quiet = quiet + 1 if backlog == 0 else 0
        if quiet >= 3:
            return True
        await asyncio.sleep(0.5)
    return False
