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

Times are integer microseconds since the Unix epoch here: this runs once per tick on the ingest
hot path, and integer arithmetic is several times cheaper than datetime objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

US = 1_000_000
DAY_US = 86_400 * US
IST_OFFSET_US = 19_800 * US
SESSION_OPEN_GRACE_US = (9 * 3600 + 16 * 60) * US  # 09:16 IST, from IST midnight
SECONDS_REMEMBERED = 256
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def to_us(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def ist_day(us: int) -> int:
    """The IST calendar day of an epoch-microsecond time, as days since 1970-01-01."""
    return (us + IST_OFFSET_US) // DAY_US


def day_to_date(day: int) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + day)


def date_to_day(value: date) -> int:
    return value.toordinal() - _EPOCH_ORDINAL


@dataclass(slots=True)
class InstrumentVolume:
    day: int  # IST day number
    volume: int
    last_us: int


class VolumeTracker:
    def __init__(self) -> None:
        self.state: dict[int, InstrumentVolume] = {}
        self.seconds: dict[int, dict[int, int]] = {}
        self.touched: set[int] = set()
        self.cleared: set[int] = set()

    def load(self, rows: list[tuple[int, date, int, datetime]]) -> None:
        for instrument_id, day, volume, last_time in rows:
            last_us = to_us(last_time)
            self.state[instrument_id] = InstrumentVolume(date_to_day(day), volume, last_us)
            self.seconds[instrument_id] = {last_us // US: last_us}

    def reset(self, instrument_ids: set[int] | frozenset[int]) -> None:
        """Forget the previous volume (after a reconnect: the volume in between was not seen)."""
        for instrument_id in instrument_ids:
            if self.state.pop(instrument_id, None) is not None:
                self.cleared.add(instrument_id)
            self.touched.discard(instrument_id)

    def apply(self, instrument_id: int, ts_us: int, volume: int | None, last_quantity: int | None) -> tuple[int, int]:
        """The tick's stored time (tie-broken, epoch µs) and its traded quantity."""
        per_second = self.seconds.get(instrument_id)
        if per_second is None:
            per_second = self.seconds[instrument_id] = {}
        second = ts_us // US
        used = per_second.get(second)
        if used is not None and ts_us <= used:
            ts_us = used + 1
        per_second[second] = ts_us
        if len(per_second) > SECONDS_REMEMBERED:
            for old in sorted(per_second)[: SECONDS_REMEMBERED // 2]:
                del per_second[old]
        if volume is None:  # LTP-only tick: no volume information
            return ts_us, 0
        local = ts_us + IST_OFFSET_US
        day = local // DAY_US
        st = self.state.get(instrument_id)
        if st is None or st.day < day:
            if local % DAY_US < SESSION_OPEN_GRACE_US:
                delta = volume
            else:
                delta = min(last_quantity or 0, volume)
            last = ts_us if st is None or st.day < day else max(st.last_us, ts_us)
            self.state[instrument_id] = InstrumentVolume(day, volume, last)
        elif st.day > day:  # a straggler from a previous day: today's state stays
            return ts_us, 0
        else:
            delta = volume - st.volume
            if delta > 0:
                st.volume = volume
            else:
                delta = 0
            if ts_us > st.last_us:
                st.last_us = ts_us
        self.touched.add(instrument_id)
        self.cleared.discard(instrument_id)
        return ts_us, delta

    def take_changes(self) -> tuple[list[tuple[int, date, int, datetime]], list[int]]:
        """Rows to upsert and ids to delete in ``tick_volume_state`` since the last call."""
        rows = []
        for i in self.touched:
            st = self.state.get(i)
            if st is not None:
                rows.append((i, day_to_date(st.day), st.volume, from_us(st.last_us)))
        cleared = list(self.cleared)
        self.touched.clear()
        self.cleared.clear()
        return rows, cleared
