"""Per-tick traded quantity from the brokers' cumulative day volume, and unique tick times.

Kite's ``volume_traded`` and Fyers' ``vol_traded_today`` are the volume traded *today so far*;
summing them (as the specification's sketch does) counts every trade many times. A candle's
volume is the sum of per-tick increments, computed here in arrival order with the previous
value per instrument (persisted in ``tick_volume_state`` so it survives restarts):

* same IST day: ``max(0, volume - previous)`` (a late, smaller value adds nothing);
* first tick of an IST day, or the first after a reconnect (:meth:`VolumeTracker.reset`):
  the whole ``volume`` when the tick is before 09:16 IST (the day's trading so far happened
  in the pre-open and the opening minute we were there for), else only ``last_quantity``
  (the volume before it happened while we were not capturing; that time is backfilled from
  broker history rather than piled onto one minute).

Brokers stamp ticks to the second, so several ticks of one instrument share an exchange time and
``first``/``last`` would be ambiguous. A tick whose time is not after the latest time already
given to a tick of the same instrument in the same second is moved to one microsecond after it:
arrival order decides inside a second, and a tick never leaves its second. The latest time per
second is remembered for the most recent :data:`SECONDS_REMEMBERED` seconds of each instrument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from trading_helper.timeframes import IST

SESSION_OPEN_GRACE = time(9, 16)
SECONDS_REMEMBERED = 256
_ONE_US = timedelta(microseconds=1)


@dataclass(slots=True)
class InstrumentVolume:
    trading_day: date
    volume: int
    last_time: datetime


class VolumeTracker:
    def __init__(self) -> None:
        self.state: dict[int, InstrumentVolume] = {}
        self.last_time: dict[int, datetime] = {}
        self.seconds: dict[int, dict[int, datetime]] = {}
        self.touched: set[int] = set()
        self.cleared: set[int] = set()

    def load(self, rows: list[tuple[int, date, int, datetime]]) -> None:
        for instrument_id, day, volume, last_time in rows:
            self.state[instrument_id] = InstrumentVolume(day, volume, last_time)
            self.last_time[instrument_id] = last_time
            self.seconds[instrument_id] = {int(last_time.timestamp()): last_time}

    def reset(self, instrument_ids: set[int] | frozenset[int]) -> None:
        """Forget the previous volume (after a reconnect: the volume in between was not seen)."""
        for instrument_id in instrument_ids:
            if self.state.pop(instrument_id, None) is not None:
                self.cleared.add(instrument_id)
            self.touched.discard(instrument_id)

    def apply(
        self, instrument_id: int, ts: datetime, volume: int | None, last_quantity: int | None
    ) -> tuple[datetime, int]:
        """The tick's stored time (tie-broken) and its traded quantity."""
        per_second = self.seconds.get(instrument_id)
        if per_second is None:
            per_second = self.seconds[instrument_id] = {}
        second = int(ts.timestamp() // 1)
        used = per_second.get(second)
        if used is not None and ts <= used:
            ts = used + _ONE_US
        per_second[second] = ts
        if len(per_second) > SECONDS_REMEMBERED:
            for old in sorted(per_second)[: SECONDS_REMEMBERED // 2]:
                del per_second[old]
        last = self.last_time.get(instrument_id)
        if last is None or ts > last:
            self.last_time[instrument_id] = ts
        if volume is None:  # LTP-only tick: no volume information
            return ts, 0
        local = ts.astimezone(IST)
        day = local.date()
        st = self.state.get(instrument_id)
        if st is None or st.trading_day < day:
            delta = volume if local.time() < SESSION_OPEN_GRACE else min(last_quantity or 0, volume)
            self.state[instrument_id] = InstrumentVolume(day, volume, self.last_time[instrument_id])
        elif st.trading_day > day:  # a straggler from a previous day: today's state stays
            return ts, 0
        else:
            delta = max(0, volume - st.volume)
            if volume > st.volume:
                st.volume = volume
            st.last_time = self.last_time[instrument_id]
        self.touched.add(instrument_id)
        self.cleared.discard(instrument_id)
        return ts, delta

    def take_changes(self) -> tuple[list[tuple[int, date, int, datetime]], list[int]]:
        """Rows to upsert and ids to delete in ``tick_volume_state`` since the last call."""
        rows = [(i, self.state[i].trading_day, self.state[i].volume, self.state[i].last_time)
                for i in self.touched if i in self.state]
        cleared = list(self.cleared)
        self.touched.clear()
        self.cleared.clear()
        return rows, cleared
