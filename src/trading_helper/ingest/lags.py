"""Receive-to-commit lag of every tick a writer commits, whole and by stage, as histograms (ms).

A tick's lag is split at the moments the pipeline hands it on, each taken by the wall clock of
the process that does it (collectors and writers of one deployment share a clock closely enough
for milliseconds):

* ``collect``: received from the broker's socket -> accepted by the receiver (its stream entry's
  id is that moment, in ms): parsing, and waiting behind other frames in the collector's loop;
* ``stream``: accepted -> read by the writer: the receiver's send grouping, the XADD, and the
  writer's wait for its next read (reads of a fenced stream poll);
* ``batch``: read -> its batch's commit starts: preparing rows, waiting for the commit in flight
  and for the minimum batch interval;
* ``commit``: the transaction (COPY, offset, volume state), to its end.

The stages add up to ``total``. Histograms are Counters of whole milliseconds (capped), built with
numpy per batch: a Python float per tick cost the writer more than its own bookkeeping.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import numpy.typing as npt

STAGES = ("collect", "stream", "batch", "commit")
#: slower ticks count in this last bucket (ms)
CAP_MS = 60_000


def _count(into: Counter[int], lag_us: npt.NDArray[np.int64]) -> None:
    ms = np.clip(np.rint(lag_us / 1000.0), 0, CAP_MS).astype(np.int64)
    values, counts = np.unique(ms, return_counts=True)
    into.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))


class LagHistograms:
    """``total`` and one histogram per stage of :data:`STAGES`."""

    def __init__(self) -> None:
        self.total: Counter[int] = Counter()
        self.stages: dict[str, Counter[int]] = {s: Counter() for s in STAGES}

    def add(
        self,
        received_us: npt.NDArray[np.int64],
        accepted_us: npt.NDArray[np.int64],
        read_us: npt.NDArray[np.int64],
        commit_started_us: int,
        committed_us: int,
    ) -> None:
        """One committed batch: per tick its receive, accept and read times (epoch µs; accept and
        read may be empty when not known, then only ``total`` is counted)."""
        if not len(received_us):
            return
        _count(self.total, committed_us - received_us)
        if len(accepted_us) != len(received_us) or len(read_us) != len(received_us):
            return
        _count(self.stages["collect"], accepted_us - received_us)
        _count(self.stages["stream"], read_us - accepted_us)
        _count(self.stages["batch"], commit_started_us - read_us)
        commit_ms = min(CAP_MS, max(0, round((committed_us - commit_started_us) / 1000)))
        self.stages["commit"][commit_ms] += len(received_us)

    def merge(self, other: LagHistograms) -> None:
        self.total.update(other.total)
        for stage, hist in other.stages.items():
            self.stages[stage].update(hist)

    def take(self) -> LagHistograms:
        """What was counted, leaving this empty."""
        taken = LagHistograms()
        taken.total, taken.stages = self.total, self.stages
        self.total, self.stages = Counter(), {s: Counter() for s in STAGES}
        return taken

    def summary(self) -> dict[str, dict[str, float | None]]:
        """p50 and p99 (ms) of the total and of each stage."""
        return {
            name: {"p50": percentile(hist, 0.5), "p99": percentile(hist, 0.99)}
            for name, hist in (("total", self.total), *self.stages.items())
        }

    def as_json(self) -> dict[str, dict[str, int]]:
        return {"total": _keyed(self.total)} | {s: _keyed(h) for s, h in self.stages.items()}


def percentile(histogram: Counter[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram of milliseconds (None when empty)."""
    total = sum(histogram.values())
    if not total:
        return None
    rank, seen = q * (total - 1), 0
    for ms in sorted(histogram):
        seen += histogram[ms]
        if seen > rank:
            return float(ms)
    return float(max(histogram))


def mean(histogram: Counter[int]) -> float | None:
    total = sum(histogram.values())
    return sum(k * v for k, v in histogram.items()) / total if total else None


def _keyed(hist: Counter[int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(hist.items())}


def from_json(data: dict[str, dict[str, int]]) -> LagHistograms:
    lags = LagHistograms()
    lags.total.update({int(k): int(v) for k, v in (data.get("total") or {}).items()})
    for stage in STAGES:
        lags.stages[stage].update({int(k): int(v) for k, v in (data.get(stage) or {}).items()})
    return lags
