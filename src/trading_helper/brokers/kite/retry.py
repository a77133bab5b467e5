"""Backoff and rate limiting shared by Kite's REST client and ticker.

Kite counts historical requests per API key (3/s), not per client object, so the limiter for a
key is one object per process, handed to every caller that asks for it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque

from trading_helper.brokers.kite.constants import HISTORICAL_REQUESTS_PER_SECOND


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with jitter for the ``attempt``-th retry (1-based).

    Half of the delay is fixed and half random ("equal jitter"): never zero, so a flapping
    server is not hammered, and spread out, so many clients do not retry in lockstep.
    """
    ceiling = min(cap_s, base_s * 2 ** max(0, attempt - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


class RateLimiter:
    """At most ``rate`` acquisitions in any window of ``period_s`` seconds.

    Slots are reserved synchronously (no lock, so it is safe to share across tasks and usable
    from any event loop); each caller then sleeps until its slot.
    """

    def __init__(self, rate: int, period_s: float = 1.0) -> None:
        if rate < 1 or period_s <= 0:
            raise ValueError("rate must be >= 1 and period_s > 0")
        self.rate = rate
        self.period_s = period_s
        self._slots: deque[float] = deque(maxlen=rate)

    def _reserve(self) -> float:
        now = time.monotonic()
        slot = now
        if len(self._slots) == self.rate:
            # the rate-th previous slot must be a whole period behind this one
            slot = max(now, self._slots[0] + self.period_s)
        self._slots.append(slot)
        return slot - now

    async def acquire(self) -> None:
        wait = self._reserve()
        if wait > 0:
            await asyncio.sleep(wait)


_HISTORICAL_LIMITERS: dict[str, RateLimiter] = {}


def historical_limiter(api_key: str) -> RateLimiter:
    """The process-wide limiter for ``api_key``'s historical requests (3 per second)."""
    limiter = _HISTORICAL_LIMITERS.get(api_key)
    if limiter is None:
        # 10% margin: Kite counts arrivals, and network jitter can bunch our evenly spaced sends
        limiter = _HISTORICAL_LIMITERS[api_key] = RateLimiter(HISTORICAL_REQUESTS_PER_SECOND, 1.1)
    return limiter
