"""Backoff, rate limiting and the HTTP retry loop shared by every broker adapter (one
implementation, not one per broker)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable

import httpx

from trading_helper.errors import BrokerError, BrokerUnavailable, RateLimited, should_retry

log = logging.getLogger(__name__)


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with jitter for the ``attempt``-th retry (1-based).

    Half of the delay is fixed and half random ("equal jitter"): never zero, so a flapping
    server is not hammered, and spread out, so many clients do not retry in lockstep.
    """
    ceiling = min(cap_s, base_s * (1 << min(30, max(0, attempt - 1))))
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


async def send_with_retries(
    send: Callable[[], Awaitable[httpx.Response]],
    judge: Callable[[httpx.Response], BrokerError | None],
    *,
    what: str,
    attempts: int,
    base_s: float,
    cap_s: float,
) -> httpx.Response:
    """``send()`` (one HTTP request, prepared afresh each time: headers, rate limit) until
    ``judge`` finds no error in its answer, at most ``attempts`` times.

    A network error is :class:`BrokerUnavailable` (from the httpx error); the judge's error is
    raised at once unless :func:`should_retry` says otherwise (429 and 5xx are retried, an expired
    login or a refusal is not); between tries a capped jittered backoff, at least a 429's
    ``retry_after_s`` (capped too). The last error is raised when the tries run out.
    """
    failure: BrokerError | None = None
    for attempt in range(1, attempts + 1):
        try:
            response = await send()
        except httpx.TransportError as exc:  # connect/read errors, timeouts, dropped sockets
            failure = BrokerUnavailable(f"{what}: network error ({type(exc).__name__})")
            failure.__cause__ = exc
        else:
            failure = judge(response)
            if failure is None:
                return response
            if not should_retry(failure):
                raise failure
        if attempt < attempts:
            delay = backoff_delay(attempt, base_s, cap_s)
            hint = failure.retry_after_s if isinstance(failure, RateLimited) else None
            if hint:
                delay = max(delay, min(hint, cap_s))
            log.warning("%s (attempt %d/%d), retrying in %.2fs", failure, attempt, attempts, delay)
            await asyncio.sleep(delay)
    assert failure is not None
    log.warning("giving up on %s after %d attempts: %s", what, attempts, failure)
    raise failure
