"""Which updates are trades, when they traded, and how much: the one place of these rules.

Kite's ``volume_traded`` and Fyers' ``vol_traded_today`` are the volume traded *today so far*;
summing them (as the specification's sketch does) counts every trade many times. A candle's
volume is the sum of per-tick increments, computed here in arrival order against a *baseline*
per instrument: the largest cumulative volume seen on the IST day of its trade, with the time of
that trade. The baseline is persisted in ``tick_volume_state`` with every batch and kept across
reconnects and restarts, so it always says exactly what was already counted:

* **candle time**: an update belongs to the time of the trade its price and volume come from
  (``Tick.trade_ts``: Kite full mode ``last_trade_time``, Fyers ``last_traded_time``), else to
  its exchange time (modes without a trade time, indices). The IST day is that time's.
* **no new trade**: an update with the same cumulative volume as the baseline and a last-trade
  time that is not newer (or no last-trade time) repeats a trade already counted (a quote or depth change, or the snapshot a broker sends
  on every (re)subscribe). It is stored as a quote update and never opens or moves a candle.
* **same IST day**: ``max(0, volume - baseline)``. After a reconnect or a restart that is all the
  volume traded while we were away, credited to the first trade we see again: the day's total
  stays exact, no tick is credited with volume already counted, and the tick's bucket is
  ``partial`` through live coverage (it holds time we did not capture, or the reconnect itself).
  A late, smaller value adds nothing.
* **no baseline for the day** (its first trade, or the first since the writer knew this
  instrument): when the trade is before 09:16 IST and capture started that IST day or earlier
  (or we do not know when), the whole ``volume`` (the day's trading so far happened in the pre-open
  match and the opening minute: NSE pre-open, MCX opens 09:00); else a trade from *before capture
  started* (e.g. Fyers' snapshot at subscribe time whose last trade was 40 minutes ago) is no new
  trade (its volume is the "volume before capture"). Brokers stamp trades to the second, so
  "before" means in an earlier second than the one capture started in: a trade stamped with that
  same second may have happened after the connect, and it is counted rather than lost (at most one
  trade's quantity, in a bucket that is partial anyway); else only ``last_quantity`` (the volume before
  it happened while we were not capturing; that time is backfilled from broker history rather
  than piled onto one minute).
* updates without a cumulative volume (LTP mode, indices) cannot be told apart: each is a trade
  with no volume.

Capture starts are the receiver's reset entries (:class:`~trading_helper.ingest.batch.VolumeReset`,
one per connect and subscription); they only record the time, never clear the baseline.

Brokers stamp ticks to the second, so several trades of one instrument share a second and
``first``/``last`` would be ambiguous. A trade whose time is not after the latest time already
given to a trade of the same instrument in the same second is moved to one microsecond after it:
arrival order decides inside a second, and a trade never leaves its second. The latest time per
second is remembered for the most recent :data:`SECONDS_REMEMBERED` seconds of each instrument:
a ring of that many places per instrument, second ``s`` in place ``s % SECONDS_REMEMBERED``, so a
second is forgotten once a second that much later is used (and a trade older than that is not
remembered). :class:`~.volume_book.VolumeBook` applies these rules to whole batches at once.

Times are integer microseconds since the Unix epoch here: this runs once per tick on the ingest
hot path, and integer arithmetic is several times cheaper than datetime objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from trading_helper.storage.ticks import VolumeStateRow

US = 1_000_000
DAY_US = 86_400 * US
IST_OFFSET_US = 19_800 * US
SESSION_OPEN_GRACE_US = (9 * 3600 + 16 * 60) * US  # 09:16 IST, from IST midnight
SECONDS_REMEMBERED = 128
#: :meth:`VolumeTracker.apply` returns this as the time of an update that is no new trade
NO_TRADE = -1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def ist_day(us: int) -> int:
    """The IST calendar day of an epoch-microsecond time, as days since 1970-01-01."""
    return (us + IST_OFFSET_US) // DAY_US


@dataclass(slots=True)
class InstrumentVolume:
    day: int = -1  # IST day number of the baseline; -1: none
    volume: int = -1  # baseline: the day's largest cumulative volume seen
    trade_us: int = -1  # last-trade time of the update that set the baseline (-1: none given)
    last_us: int = -1  # latest time given to a trade row (tie-breaks after a restart)
    capture_us: int = -1  # when the current capture started (-1: not known)


class VolumeTracker:
    def __init__(self) -> None:
        self.state: dict[int, InstrumentVolume] = {}
        #: per instrument, ring place -> (second, the latest time given to a trade in it)
        self.seconds: dict[int, dict[int, tuple[int, int]]] = {}
        self.touched: set[int] = set()

    def load(self, rows: list[VolumeStateRow]) -> None:
        """The committed state (``storage.ticks.load_volume_state``)."""
        self.merge(rows)

    def merge(self, rows: list[VolumeStateRow]) -> None:
        """Committed state, possibly moved on in another stream (the instrument was carried by
        another shard meanwhile): per instrument the later baseline of the two (by IST day, then
        volume: a day's baseline only grows), the later trade-row time and capture start. Ours
        is never older than what we committed ourselves, so merging our own state changes
        nothing; rows merge in any order."""
        for instrument_id, day, volume, last_us, trade_us, capture_us in rows:
            st = self.state.get(instrument_id)
            if st is None:
                st = self.state[instrument_id] = InstrumentVolume()
            if volume >= 0 and (day, volume, trade_us) > (st.day, st.volume, st.trade_us):
                st.day, st.volume, st.trade_us = day, volume, trade_us
            st.capture_us = max(st.capture_us, capture_us)  # captures start ever later
            if last_us > st.last_us:
                st.last_us = last_us
                per_second = self.seconds.setdefault(instrument_id, {})
                second = last_us // US
                place = second % SECONDS_REMEMBERED
                prev = per_second.get(place)
                if prev is None or prev[0] < second:
                    per_second[place] = (second, last_us)
                elif prev[0] == second:
                    per_second[place] = (second, max(prev[1], last_us))

    def reset(self, instrument_ids: set[int] | frozenset[int], at_us: int | None) -> None:
        """Capture of these instruments (re)started at ``at_us`` (a connect or a subscription).

        The baseline is kept: the next trade is credited with what was traded meanwhile."""
        if at_us is None:  # a reset entry from before schema version 6: nothing to record
            return
        for instrument_id in instrument_ids:
            st = self.state.get(instrument_id)
            if st is None:
                st = self.state[instrument_id] = InstrumentVolume()
            st.capture_us = at_us
            self.touched.add(instrument_id)

    def apply(
        self, instrument_id: int, ts_us: int, trade_us: int, volume: int | None, last_quantity: int | None
    ) -> tuple[int, int]:
        """The update's candle time (tie-broken, epoch µs) and traded quantity; the time is
        :data:`NO_TRADE` for an update that carries no new trade. ``trade_us`` is -1 when the
        update has no last-trade time."""
        t = trade_us if trade_us >= 0 else ts_us
        st = self.state.get(instrument_id)
        if volume is None:  # LTP-only update: no volume information
            delta = 0
        else:
            local = t + IST_OFFSET_US
            day = local // DAY_US
            if st is None:
                st = self.state[instrument_id] = InstrumentVolume()
            if st.day == day:
                if volume > st.volume:
                    delta = volume - st.volume
                    st.volume, st.trade_us = volume, trade_us
                elif volume < st.volume:  # a late, smaller value: a trade already counted
                    delta = 0
                elif trade_us < 0 or st.trade_us < 0 or trade_us <= st.trade_us:
                    return NO_TRADE, 0
                else:  # a newer trade time with the same volume: a trade of no reported size
                    delta = 0
                    st.trade_us = trade_us
            elif st.day > day:  # a straggler from a previous day: today's baseline stays
                delta = 0
            else:
                cap = st.capture_us
                if local % DAY_US < SESSION_OPEN_GRACE_US and (cap < 0 or ist_day(cap) <= day):
                    delta = volume
                elif 0 <= trade_us < cap - cap % US:  # traded in a second before capture's
                    st.day, st.volume, st.trade_us = day, volume, trade_us
                    self.touched.add(instrument_id)
                    return NO_TRADE, 0
                else:
                    delta = min(last_quantity or 0, volume)
                st.day, st.volume, st.trade_us = day, volume, trade_us
            self.touched.add(instrument_id)
        per_second = self.seconds.get(instrument_id)
        if per_second is None:
            per_second = self.seconds[instrument_id] = {}
        second = t // US
        place = second % SECONDS_REMEMBERED
        prev = per_second.get(place)
        if prev is None or prev[0] < second:
            per_second[place] = (second, t)
        elif prev[0] == second:
            if t <= prev[1]:
                t = prev[1] + 1
            per_second[place] = (second, t)
        if st is not None and t > st.last_us:
            st.last_us = t
        return t, delta

    def forget(self, instrument_id: int) -> None:
        """Drop what is known of an instrument (a reader that stopped following it)."""
        self.state.pop(instrument_id, None)
        self.seconds.pop(instrument_id, None)
        self.touched.discard(instrument_id)

    def take_changes(self) -> list[VolumeStateRow]:
        """Rows to upsert into ``tick_volume_state`` since the last call."""
        rows: list[VolumeStateRow] = []
        for i in self.touched:
            st = self.state[i]
            has = st.volume >= 0
            rows.append(
                (i, st.day if has else -1, st.volume if has else -1, st.last_us, st.trade_us, st.capture_us)
            )
        self.touched.clear()
        return rows
