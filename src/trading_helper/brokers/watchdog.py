"""The silence watchdog of one live-feed socket (``brokers/connection.py`` reads by it): a socket
that looks open but sends nothing (no frame, and no pong where the broker pings) for the stall
timeout is dead. Times of life are data time (``clock.now()``, simulated in the soak); the
stall itself is measured on the monotonic clock."""

from __future__ import annotations

import time
from datetime import datetime

from trading_helper import clock


class Watchdog:
    """Signs of life on one socket. No frame (and no pong, where the broker pings) for
    ``stall_s`` means the socket is dead even if it looks open (a silent stall)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._last = time.monotonic()
        #: wall time of the last sign of life: where coverage ends when the socket dies
        self.alive_at = clock.now()

    def touch(self) -> datetime:
        self._last = time.monotonic()
        self.alive_at = clock.now()
        return self.alive_at

    def processed(self) -> None:
        """A frame was handled: the time that took is not silence (frames waiting meanwhile are
        still to be read), so the stall clock restarts; ``alive_at`` stays the frame's arrival."""
        self._last = time.monotonic()

    def remaining(self) -> float:
        return self.stall_s - (time.monotonic() - self._last)
