"""The one clock that stamps data times: receive times, coverage, validation, gap detection.

By default it is the real clock. ``TH_CLOCK`` replaces it with a simulated one, for replaying
market days fast (``trading-helper bench soak``):

- ``TH_CLOCK="2026-11-25T03:30:00+00:00@60"``: simulated time starts there when the process first
  reads the clock and runs 60 times faster than real time;
- ``...@60@1764626000.5``: the same, anchored at that real epoch second instead, so that several
  processes share one simulated time;
- ``TH_CLOCK="@/path/to/file"``: the file holds one of the above and is re-read when it changes
  (checked at every call: a stat, a few microseconds, paid only in simulated runs), so a driver can
  jump the clock over nights and weekends and change its speed. Checked at every call, because a
  process that kept the old spec for a while after a slowdown (600x to real speed, when the soak
  starts a fault) would run minutes ahead and then jump back: its coverage claimed time the
  driver's clock had not reached, and the soak's holes went unfetched.

Timeouts, backoffs and rate limits stay on the real (monotonic) clock: only data times move.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from trading_helper.errors import ConfigError

ENV_VAR = "TH_CLOCK"


@dataclass(frozen=True, slots=True)
class SimClock:
    start: datetime
    speed: float
    anchor: float  # real epoch seconds at which simulated time was ``start``

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.anchor) * self.speed)

    def spec(self) -> str:
        return f"{self.start.isoformat()}@{self.speed:g}@{self.anchor!r}"


def parse_clock(spec: str) -> SimClock:
    """``<aware ISO start>@<speed>[@<real epoch anchor>]`` -> a simulated clock."""
    parts = spec.strip().split("@")
    try:
        start = datetime.fromisoformat(parts[0])
        speed = float(parts[1])
        anchor = float(parts[2]) if len(parts) > 2 else time.time()
    except (IndexError, ValueError) as exc:
        raise ConfigError(f"{ENV_VAR} must be '<ISO start>@<speed>[@<epoch>]', not {spec!r}") from exc
    if start.utcoffset() is None or speed <= 0 or len(parts) > 3:
        raise ConfigError(f"{ENV_VAR}: the start needs a UTC offset and the speed must be positive: {spec!r}")
    return SimClock(start, speed, anchor)


class _Configured:
    """What ``TH_CLOCK`` says, read once (or, for a file, again when the file changes)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget what was read: the next ``get`` reads ``TH_CLOCK`` again."""
        self._clock: SimClock | None = None
        self._file: str | None = None
        #: what identifies the file's content: a replace (rename) gives a new inode
        self._stamp: tuple[int, int, int] | None = None
        self._loaded = False

    def get(self) -> SimClock | None:
        if not self._loaded:
            self._loaded = True
            spec = os.environ.get(ENV_VAR, "").strip()
            if spec.startswith("@"):
                self._file = spec[1:]
            elif spec:
                self._clock = parse_clock(spec)
        if self._file is not None:
            st = os.stat(self._file)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                with open(self._file) as fh:
                    self._clock = parse_clock(fh.read())
                self._stamp = stamp
        return self._clock


_configured = _Configured()


def now() -> datetime:
    """The current time, aware, in UTC: real, or simulated when ``TH_CLOCK`` says so."""
    clock = _configured.get()
    return datetime.now(UTC) if clock is None else clock.now().astimezone(UTC)


def reload() -> None:
    """Read ``TH_CLOCK`` again at the next :func:`now` (tests and the soak driver change it)."""
    _configured.reset()
