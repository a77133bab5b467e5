"""The cluster bench's coverage holes, read back through an API replica: were they backfilled?

A hole is a (instrument, 1m bucket) in which a tick the stand-in sent was never stored (sent while
no collector carried its shard, or in flight on a killed collector's socket). The issue's rule: a
hole is counted as such and backfilled from the broker's history, not lost. So after the run the
bench reads 1m candles over each sampled instrument's holes through an API replica (which fetches
what live coverage does not claim from the stand-in's history) and sorts every hole bucket:

* ``holes_backfilled``: the answer's candle for it has source ``broker`` (the stand-in's history
  served it);
* ``holes_outside_session``: the bucket lies outside every trading session of the instrument's
  calendar (nothing to backfill, the stand-in has no history there);
* ``holes_unfetched``: the rest (live coverage claimed a bucket whose ticks were missing, or no
  fetch happened): the failure the small-cluster test rules out.

A backfill only fetches buckets ended ``FINAL_AFTER`` (2 minutes) ago, so the reading waits for
that after the newest hole. Cheap: at most ``sample`` instruments with holes (evenly spread over
them by id), one request each, a few at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import numpy as np

from trading_helper.candles.backfill import FINAL_AFTER
from trading_helper.storage import sql_candles

SAMPLE = 40
_SHIFT = 1 << 32
_MINUTE = 60


def hole_minutes(unique: np.ndarray, ids: Sequence[int], frames_sent: int, t0: int) -> dict[int, list[int]]:
    """instrument id -> the epoch seconds of the 1m buckets holding a frame of [0, frames_sent) not
    stored. ``unique``: the stored keys (instrument id << 32 | frame), sorted, each once; frame
    ``f`` is exchange second ``t0 + f // 2`` (:mod:`.market`)."""
    every = np.arange(frames_sent, dtype=np.int64)
    out: dict[int, list[int]] = {}
    for iid in ids:
        base = iid * _SHIFT
        lo, hi = np.searchsorted(unique, [base, base + frames_sent])
        missing = np.setdiff1d(every, unique[lo:hi] - base, assume_unique=True)
        if missing.size:
            seconds = t0 + missing // 2
            out[iid] = sorted({int(s) for s in seconds - seconds % _MINUTE})
    return out


def sample_of(holes: dict[int, list[int]], size: int) -> list[int]:
    """At most ``size`` of the instruments with holes, evenly spread over them in id order."""
    ids = sorted(holes)
    if len(ids) <= size:
        return ids
    step = len(ids) / size
    return [ids[int(k * step)] for k in range(size)]


async def check_backfill(
    db: asyncpg.Connection,
    api: httpx.AsyncClient,
    holes: dict[int, list[int]],
    *,
    sample: int = SAMPLE,
    parallel: int = 4,
) -> dict[str, Any]:
    chosen = sample_of(holes, sample)
    newest = max((holes[i][-1] for i in chosen), default=None)
    if newest is not None:  # the backfill fetches only buckets ended FINAL_AFTER ago
        ready = newest + _MINUTE + FINAL_AFTER.total_seconds() + 2
        await asyncio.sleep(max(0.0, ready - time.time()))
    gate = asyncio.Semaphore(parallel)
    counts = {"backfilled": 0, "outside_session": 0, "unfetched": 0}
    unfetched: list[dict[str, Any]] = []

    in_sessions = {}  # one connection: asked in turn, before the requests go out together
    for iid in chosen:
        buckets = [datetime.fromtimestamp(s, UTC) for s in holes[iid]]
        rows = await db.fetch(sql_candles.BENCH_BUCKETS_IN_SESSION, iid, buckets)
        in_sessions[iid] = {r["b"] for r in rows}

    async def one(iid: int) -> None:
        buckets = [datetime.fromtimestamp(s, UTC) for s in holes[iid]]
        in_session = in_sessions[iid]
        params = {"instrument": f"id:{iid}", "interval": "1m", "from": buckets[0].isoformat(),
                  "to": (buckets[-1] + timedelta(minutes=1)).isoformat()}  # fmt: skip
        async with gate:
            reply = await api.get("/api/candles", params=params)
        reply.raise_for_status()
        source = {datetime.fromisoformat(c["time"]): c["source"] for c in reply.json()["candles"]}
        for bucket in buckets:
            if bucket not in in_session:
                counts["outside_session"] += 1
            elif source.get(bucket) == "broker":
                counts["backfilled"] += 1
            else:
                counts["unfetched"] += 1
                if len(unfetched) < 5:
                    unfetched.append({"instrument_id": iid, "bucket": bucket.isoformat(),
                                      "source": source.get(bucket)})  # fmt: skip

    await asyncio.gather(*(one(i) for i in chosen))
    return {
        "holes_instruments": len(holes),
        "holes_instruments_sampled": len(chosen),
        "holes": sum(len(holes[i]) for i in chosen),
        "holes_backfilled": counts["backfilled"],
        "holes_outside_session": counts["outside_session"],
        "holes_unfetched": counts["unfetched"],
        "holes_unfetched_samples": unfetched,
    }
