"""How late a process's event loop runs, and its longest garbage-collection pause.

A lease holder whose loop falls seconds behind loses its leases (cluster/lease.py): the lag is
what says why. A task sleeps :data:`EVERY_S` and notes how much later than asked it woke; a
``gc.callbacks`` hook times every collection. :meth:`LoopLag.take` returns the worst of both
since the last take (for a status line); a lag over :data:`WARN_S` is logged when seen, and a
watchdog thread logs where the loop's thread is while it is blocked that long (once per stall),
which says what blocked it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback
from typing import Any

log = logging.getLogger(__name__)

EVERY_S = 0.1
WARN_S = 1.0


class LoopLag:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lag_max_s = 0.0
        self.gc_max_s = 0.0
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread = threading.get_ident()

    def _watchdog(self) -> None:
        reported = 0.0
        while not self._stop.wait(0.25):
            beat = self._beat
            if time.monotonic() - beat > WARN_S and beat != reported:
                reported = beat
                frame = sys._current_frames().get(self._loop_thread)
                where = "".join(traceback.format_stack(frame)[-8:]) if frame is not None else "?"
                log.warning(
                    "%s: the event loop has been blocked for over %.0f s, in:\n%s", self.name, WARN_S, where
                )

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.gc_max_s = max(self.gc_max_s, time.perf_counter() - self._gc_started)

    async def _watch(self) -> None:
        while True:
            asked = time.monotonic() + EVERY_S
            await asyncio.sleep(EVERY_S)
            self._beat = time.monotonic()
            lag = self._beat - asked
            if lag > self.lag_max_s:
                self.lag_max_s = lag
            if lag > WARN_S:
                log.warning(
                    "%s: the event loop ran %.1f s late (longest garbage collection since the last "
                    "status: %.0f ms)",
                    self.name,
                    lag,
                    self.gc_max_s * 1000,
                )

    def start(self) -> None:
        if self._task is None:
            gc.callbacks.append(self._on_gc)
            self._loop_thread = threading.get_ident()
            self._beat = time.monotonic()
            self._task = asyncio.create_task(self._watch(), name=f"{self.name} loop lag")
            self._stop.clear()
            self._thread = threading.Thread(target=self._watchdog, name=f"{self.name} watchdog", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            gc.callbacks.remove(self._on_gc)
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=1)
                self._thread = None

    def take(self) -> dict[str, float]:
        """The worst loop lag and GC pause (ms) since the last take."""
        out = {
            "loop_lag_ms_max": round(self.lag_max_s * 1000, 1),
            "gc_pause_ms_max": round(self.gc_max_s * 1000, 1),
        }
        self.lag_max_s = self.gc_max_s = 0.0
        return out
