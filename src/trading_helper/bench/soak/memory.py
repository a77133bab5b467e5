"""Memory of the soak's long-lived processes, measured per process.

The schedule replaces ``serve`` twice a day (a SIGKILL, an API restart) and restarts Redis once,
so a first and a last sample taken from different processes compare a warm process with a cold
one and say nothing about growth. Each process is therefore measured on its own: RSS sampled every
:data:`SAMPLE_EVERY_S` real seconds, its start is the first sample at least :data:`WARM_UP_S` real
seconds after it started (imports, pools, caches and the first session's state are in place by
then), its end the last sample before it stopped. The soak's ``rss_mb_start``/``rss_mb_end`` are
those of the ``serve`` process measured the longest (named in ``rss_basis``); ``rss_by_process``
gives every process's figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from trading_helper.bench.soak.oracle import IST
from trading_helper.bench.soak.processes import rss_mb

SAMPLE_EVERY_S = 2.0
WARM_UP_S = 30.0


@dataclass
class ProcessMemory:
    name: str
    pid: int
    started: float  # real time
    started_sim: datetime
    #: (real time, simulated time, MiB) after warm-up
    samples: list[tuple[float, datetime, float]] = field(default_factory=list)

    def out(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "process": self.name,
            "started": _iso(self.started_sim),
            "samples": len(self.samples),
        }
        if not self.samples:
            d["note"] = f"stopped within {WARM_UP_S:g} s of its start: not measured"
            return d
        (t0, s0, mb0), (t1, s1, mb1) = self.samples[0], self.samples[-1]
        d.update(
            {
                "from": _iso(s0),
                "to": _iso(s1),
                "real_s": round(t1 - t0, 1),
                "rss_mb_start": round(mb0, 1),
                "rss_mb_end": round(mb1, 1),
                "rss_mb_max": round(max(mb for _, _, mb in self.samples), 1),
                "growth_pct": round(100 * (mb1 - mb0) / mb0, 1),
            }
        )
        return d

    @property
    def span_s(self) -> float:
        return self.samples[-1][0] - self.samples[0][0] if self.samples else -1.0


class MemoryLog:
    """RSS of named processes (``serve#2``, ``redis#1``), one record per process."""

    def __init__(self) -> None:
        self.processes: dict[str, ProcessMemory] = {}

    def sample(self, kind: str, number: int, pid: int | None, started: float, sim: datetime) -> None:
        if pid is None:
            return
        name = f"{kind}#{number}"
        rec = self.processes.get(name)
        if rec is None or rec.pid != pid:
            rec = self.processes[name] = ProcessMemory(name, pid, started, sim)
        now = time.time()
        if now - started >= WARM_UP_S and (mb := rss_mb(pid)) is not None:
            rec.samples.append((now, sim, mb))

    def summary(self) -> dict[str, Any]:
        serves = [p for p in self.processes.values() if p.name.startswith("serve#") and p.samples]
        basis = max(serves, key=lambda p: p.span_s, default=None)
        return {
            "rss_mb_start": round(basis.samples[0][2], 1) if basis else None,
            "rss_mb_end": round(basis.samples[-1][2], 1) if basis else None,
            "rss_mb_max": round(max(mb for _, _, mb in basis.samples), 1) if basis else None,
            "rss_basis": (
                f"{basis.name}, the serve process measured longest ({basis.span_s:.0f} s): its first sample "
                f"{WARM_UP_S:g} s after its start and its last before it stopped"
                if basis
                else "no serve process lived past its warm-up"
            ),
            "rss_growth_max_pct": max(
                (p.out()["growth_pct"] for p in self.processes.values() if len(p.samples) >= 2), default=None
            ),
            "rss_by_process": [p.out() for p in self.processes.values()],
        }


def _iso(sim: datetime) -> str:
    return sim.astimezone(IST).isoformat(timespec="minutes")
