"""The replay's clock: an update at exchange time ``t`` goes out ``(t - t0) / speed`` after the
first one (``t0``), by the event loop's monotonic clock. Each wait aims at that absolute instant,
so a late wake-up (a busy machine) is not carried into the next one and the pace holds over a
long replay."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime

from trading_helper.errors import ValidationError

#: the fastest paced replay; ``max`` (no pacing) is faster still
MAX_SPEED = 10_000.0


def parse_speed(value: str | float | None) -> float | None:
    """``1`` (real time) up to :data:`MAX_SPEED` times real time, or ``max`` (None): as fast as
    the reader takes them."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("max", "")):
        return None
    try:
        speed = float(value)
    except ValueError:
        raise ValidationError(
            f"speed must be a number from 1 to {MAX_SPEED:g}, or max; got {value!r}"
        ) from None
    if not math.isfinite(speed) or not 1.0 <= speed <= MAX_SPEED:
        raise ValidationError(f"speed must be a number from 1 to {MAX_SPEED:g}, or max; got {value!r}")
    return speed


class Pacer:
    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self._t0: datetime | None = None
        self._w0 = 0.0

    async def wait(self, at: datetime) -> None:
        """Return at the instant the update at exchange time ``at`` is due."""
        if self.speed is None:
            return
        loop = asyncio.get_running_loop()
        if self._t0 is None:
            self._t0, self._w0 = at, loop.time()
            return
        delay = self._w0 + (at - self._t0).total_seconds() / self.speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
