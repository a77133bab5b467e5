"""Backoff and rate limiting shared by every broker adapter (one implementation, not one per broker)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with jitter for the ``attempt``-th retry (1-based).

    Half of the delay is fixed and half random ("equal jitter"): never zero, so a flapping
    server is not hammered, and spread out, so many clients do not retry in lockstep.
    """
    ceiling = min(cap_s, base_s * 2 ** min(30, max(0, attempt - 1)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


class RateLimiter:
    """At most ``rate`` acquisitions in any window of ``period_s`` seconds, and as many more
    (rate, period) windows as given (Fyers limits per second and per minute).

    Slots are reserved synchronously (no lock, so it is safe to share across tasks and usable
    from any event loop); each caller then sleeps until its slot.
    """

    def __init__(self, rate: int, period_s: float = 1.0, *more: tuple[int, float]) -> None:
        windows = [(rate, period_s), *more]
        if any(r < 1 or p <= 0 for r, p in windows):
            raise ValueError("every rate must be >= 1 and every period > 0")
        self.rate = rate
        self.period_s = period_s
        self._windows = [(r, p, deque[float](maxlen=r)) for r, p in windows]
        self._last = 0.0

    def _reserve(self) -> float:
        now = time.monotonic()
        slot = max(now, self._last)  # slots never go backwards, so each deque's head is its r-th last
        for rate, period, slots in self._windows:
            if len(slots) == rate:
                slot = max(slot, slots[0] + period)
        for _, _, slots in self._windows:
            slots.append(slot)
        self._last = slot
        return slot - now

    async def acquire(self) -> None:
        wait = self._reserve()
        if wait > 0:
            await asyncio.sleep(wait)
