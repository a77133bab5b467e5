"""``trading-helper bench volume``: the writer's volume rules per tick, by batch and one by one.

Pure computation (no database): ``instruments`` instruments updated ``rounds`` times at Kite's
rhythm (every instrument once per half second, in batches of ``per_batch`` distinct instruments,
the day's cumulative volume growing). The reference, in the same run on the same updates, is
:class:`~trading_helper.ingest.volume.VolumeTracker` applying them one at a time; against it
:class:`~trading_helper.ingest.volume_book.VolumeBook` applies each batch at once, and
:func:`~trading_helper.ingest.batch.build_batch` (everything of a batch but the commit) runs on the
same ticks encoded as the receiver writes them. Both rule sets must give the same candle times and
traded quantities (``agree``). Best of ``repeats``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from trading_helper.ingest.batch import build_batch
from trading_helper.ingest.codec import encode_ticks
from trading_helper.ingest.volume import VolumeTracker, to_us
from trading_helper.ingest.volume_book import VolumeBook
from trading_helper.models import Tick


def run_volume_bench(
    *, instruments: int = 12_000, per_batch: int = 2_000, rounds: int = 12, repeats: int = 3
) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=300)
    batches: list[tuple[np.ndarray, ...]] = []
    chunks: list[bytes] = []
    for r in range(rounds):
        for lo in range(0, instruments, per_batch):
            at = start + timedelta(seconds=r * 0.5 + lo / instruments * 0.4)
            ids = np.arange(1 + lo, 1 + min(lo + per_batch, instruments), dtype=np.int64)
            ex = np.full(len(ids), to_us(at), np.int64)
            volume, qty = np.full(len(ids), 100 + 5 * r, np.int64), np.full(len(ids), 5, np.int64)
            batches.append((ids, ex, ex, volume, qty))
            chunks.append(encode_ticks([_tick(int(i), at, 100 + 5 * r) for i in ids]))
    n = sum(len(b[0]) for b in batches)
    known = set(range(1, instruments + 1))
    now_us = to_us(start + timedelta(seconds=rounds))

    def tracker_pass() -> list[tuple[int, int]]:
        tracker, out = VolumeTracker(), list[tuple[int, int]]()
        for ids, ex, tr, vol, qty in batches:
            for i, e, t, v, q in zip(
                ids.tolist(), ex.tolist(), tr.tolist(), vol.tolist(), qty.tolist(), strict=True
            ):
                out.append(tracker.apply(i, e, t, v, q))
        return out

    def book_pass() -> list[tuple[int, int]]:
        book, out = VolumeBook(), list[tuple[int, int]]()
        for ids, ex, tr, vol, qty in batches:
            times, delta = book.apply(book.slots(ids), ex, tr, vol, qty)
            out.extend(zip(times.tolist(), delta.tolist(), strict=True))
        return out

    def build_pass() -> int:
        book, trades = VolumeBook(), 0
        for chunk in chunks:
            trades += len(build_batch([chunk], book, known, now_us).write.trades)
        return trades

    timings: dict[str, float] = {}
    results: dict[str, Any] = {}
    for name, work in (("tracker", tracker_pass), ("book", book_pass), ("build_batch", build_pass)):
        best = float("inf")
        for _ in range(repeats):
            begun = time.perf_counter()
            results[name] = work()
            best = min(best, time.perf_counter() - begun)
        timings[name] = best / n * 1e6
    return {
        "instruments": instruments,
        "per_batch": per_batch,
        "ticks": n,
        "agree": results["tracker"] == results["book"],
        "trades_built": results["build_batch"],
        "tracker_us_per_tick": round(timings["tracker"], 3),
        "book_us_per_tick": round(timings["book"], 3),
        "build_batch_us_per_tick": round(timings["build_batch"], 3),
        "book_x_tracker": round(timings["book"] / timings["tracker"], 3),
    }


def _tick(instrument_id: int, at: datetime, volume: int) -> Tick:
    return Tick(
        instrument_id=instrument_id,
        exchange_ts=at,
        received_ts=at,
        last_price=100.0,
        last_quantity=5,
        volume=volume,
        trade_ts=at,
    )
