"""Kite's historical rate limit: 3 requests/s per API key, not per client object, so the limiter
for a key is one object per process, handed to every caller that asks for it. Backoff and the
limiter itself are the shared ones of :mod:`trading_helper.brokers.retry`."""

from __future__ import annotations

from trading_helper.brokers.kite.constants import HISTORICAL_REQUESTS_PER_SECOND
from trading_helper.brokers.retry import RateLimiter, backoff_delay

__all__ = ["RateLimiter", "backoff_delay", "historical_limiter"]


_HISTORICAL_LIMITERS: dict[str, RateLimiter] = {}


def historical_limiter(api_key: str) -> RateLimiter:
    """The process-wide limiter for ``api_key``'s historical requests (3 per second)."""
    limiter = _HISTORICAL_LIMITERS.get(api_key)
    if limiter is None:
        # 10% margin: Kite counts arrivals, and network jitter can bunch our evenly spaced sends
        limiter = _HISTORICAL_LIMITERS[api_key] = RateLimiter(HISTORICAL_REQUESTS_PER_SECOND, 1.1)
    return limiter
