"""The volume rules of :mod:`.volume`, applied to a whole batch of updates at once (the writer's).

:class:`~.volume.VolumeTracker` states the rules one update at a time; that costs about a
microsecond per tick in Python, a fifth of a writer's CPU per tick. :class:`VolumeBook` holds the
same state in numpy arrays (one slot per instrument, the per-second tie-break ring as a
``slots x SECONDS_REMEMBERED`` table) and applies the same rules to a batch in *rounds*: round
``r`` takes every instrument's ``r``-th update of the batch, so the updates of a round name
distinct instruments and each rule is one vector operation over the round. Updates of one
instrument stay in arrival order; updates of different instruments never depend on each other.
An instrument with many updates in one batch would mean many small rounds: once a round is
smaller than :data:`MIN_ROUND`, what is left goes through :class:`~.volume.VolumeTracker` itself
(its instruments' state lent to it and taken back), so the sequential rule stays the reference.
``tests/ingest/test_volume_book.py`` checks the book against the tracker on random sequences.

numpy has no "apply a state machine per key" primitive, and neither pandas nor polars
(``group_by`` folds do not carry state across batches): hence the rounds, written here.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from trading_helper.ingest.volume import (
    DAY_US,
    IST_OFFSET_US,
    NO_TRADE,
    SECONDS_REMEMBERED,
    SESSION_OPEN_GRACE_US,
    US,
    InstrumentVolume,
    VolumeTracker,
)
from trading_helper.storage.ticks import VolumeStateRow

I64 = npt.NDArray[np.int64]
#: a round smaller than this hands the rest of the batch to the sequential rule
MIN_ROUND = 16
_EMPTY = np.iinfo(np.int64).min  # a ring place that holds no second
_R = SECONDS_REMEMBERED


class VolumeBook:
    """:class:`~.volume.VolumeTracker`'s state and rules, by slot arrays. Not for concurrent use."""

    # per slot: the instrument, its InstrumentVolume fields, whether it has a state, whether it
    # changed since take_changes; the tie-break ring (second, latest time given in it) per place
    ids: I64
    day: I64
    volume: I64
    trade: I64
    last: I64
    capture: I64
    exists: npt.NDArray[np.bool_]
    touched: npt.NDArray[np.bool_]
    ring_sec: I64
    ring_used: I64

    def __init__(self, capacity: int = 1024) -> None:
        self._slot_of: dict[int, int] = {}
        self._n = 0
        self._alloc(capacity)
        self._sorted_ids = np.zeros(0, np.int64)
        self._sorted_slots = np.zeros(0, np.int64)

    def _alloc(self, capacity: int) -> None:
        old = self.__dict__.get("ids")
        n = self._n
        fields = {
            "ids": np.zeros(capacity, np.int64),
            "day": np.full(capacity, -1, np.int64),
            "volume": np.full(capacity, -1, np.int64),
            "trade": np.full(capacity, -1, np.int64),
            "last": np.full(capacity, -1, np.int64),
            "capture": np.full(capacity, -1, np.int64),
            "exists": np.zeros(capacity, bool),
            "touched": np.zeros(capacity, bool),
            "ring_sec": np.full((capacity, _R), _EMPTY, np.int64),
            "ring_used": np.zeros((capacity, _R), np.int64),
        }
        for name, array in fields.items():
            if old is not None:
                array[:n] = getattr(self, name)[:n]
            setattr(self, name, array)

    # slots

    def slots(self, instrument_ids: npt.NDArray[np.integer] | Iterable[int]) -> I64:
        """The slot of each instrument (allocated for instruments not seen before)."""
        ids = np.asarray(
            instrument_ids if isinstance(instrument_ids, np.ndarray) else list(instrument_ids), np.int64
        )
        known = self._sorted_ids
        if len(known):
            at = np.minimum(np.searchsorted(known, ids), len(known) - 1)
            if bool((known[at] == ids).all()):
                return self._sorted_slots[at]
        for i in np.unique(ids).tolist():
            if i not in self._slot_of:
                self._new_slot(i)
        known = np.fromiter(self._slot_of, np.int64, len(self._slot_of))
        order = np.argsort(known)
        self._sorted_ids = known[order]
        self._sorted_slots = np.fromiter(self._slot_of.values(), np.int64, len(self._slot_of))[order]
        return self._sorted_slots[np.searchsorted(self._sorted_ids, ids)]

    def _new_slot(self, instrument_id: int) -> None:
        if self._n == len(self.ids):
            self._alloc(2 * len(self.ids))
        self._slot_of[instrument_id] = self._n
        self.ids[self._n] = instrument_id
        self._n += 1

    def instruments(self) -> set[int]:
        """The instruments with a state (as :attr:`VolumeTracker.state`'s keys)."""
        return set(self.ids[: self._n][self.exists[: self._n]].tolist())

    def state_of(self, instrument_id: int) -> InstrumentVolume | None:
        """As :attr:`VolumeTracker.state`'s value."""
        s = self._slot_of.get(instrument_id)
        return None if s is None or not self.exists[s] else self._state(s)

    def seconds_of(self, instrument_id: int) -> dict[int, tuple[int, int]]:
        """As :attr:`VolumeTracker.seconds`' value: ring place -> (second, latest time given)."""
        s = self._slot_of.get(instrument_id)
        return {} if s is None else self._ring(s)

    def _state(self, s: int) -> InstrumentVolume:
        return InstrumentVolume(
            *(int(a[s]) for a in (self.day, self.volume, self.trade, self.last, self.capture))
        )

    def _ring(self, s: int) -> dict[int, tuple[int, int]]:
        places = np.flatnonzero(self.ring_sec[s] != _EMPTY)
        held = zip(self.ring_sec[s, places].tolist(), self.ring_used[s, places].tolist(), strict=True)
        return dict(zip(places.tolist(), held, strict=True))

    # the tracker's API

    def merge(self, rows: list[VolumeStateRow]) -> None:
        """:meth:`VolumeTracker.merge`."""
        if not rows:
            return
        cols = np.array(rows, np.int64).reshape(-1, 6).T
        slots = self.slots(cols[0])
        for x in _rounds(slots):
            s = slots[x]
            day, vol, last, trade, cap = (c[x] for c in cols[1:])
            self.exists[s] = True
            sd, sv, st = self.day[s], self.volume[s], self.trade[s]
            later = (vol >= 0) & ((day > sd) | ((day == sd) & ((vol > sv) | ((vol == sv) & (trade > st)))))
            self.day[s] = np.where(later, day, sd)
            self.volume[s] = np.where(later, vol, sv)
            self.trade[s] = np.where(later, trade, st)
            self.capture[s] = np.maximum(self.capture[s], cap)
            newer = last > self.last[s]
            s, last = s[newer], last[newer]
            self.last[s] = last
            second = last // US
            place = second % _R
            held, used = self.ring_sec[s, place], self.ring_used[s, place]
            self.ring_used[s, place] = np.where(
                held < second, last, np.where(held == second, np.maximum(used, last), used)
            )
            self.ring_sec[s, place] = np.maximum(held, second)

    def reset(self, instrument_ids: set[int] | frozenset[int], at_us: int | None) -> None:
        """:meth:`VolumeTracker.reset`."""
        if at_us is None:
            return
        s = self.slots(instrument_ids)
        self.capture[s] = at_us
        self.exists[s] = True
        self.touched[s] = True

    def take_changes(self) -> list[VolumeStateRow]:
        """:meth:`VolumeTracker.take_changes`."""
        s = np.flatnonzero(self.touched[: self._n])
        if not len(s):
            return []
        self.touched[s] = False
        vol = self.volume[s]
        has = vol >= 0
        cols = (
            self.ids[s],
            np.where(has, self.day[s], -1),
            np.where(has, vol, -1),
            self.last[s],
            self.trade[s],
            self.capture[s],
        )
        return list(zip(*(c.tolist() for c in cols), strict=True))

    def apply(
        self, slots: I64, ts_us: I64, trade_us: I64, volume: I64, last_quantity: I64
    ) -> tuple[I64, I64]:
        """:meth:`VolumeTracker.apply` of each update, in arrival order: the candle times
        (:data:`NO_TRADE` for no new trade) and the traded quantities. ``volume`` and
        ``last_quantity`` are -1 where the update has none (None)."""
        t_out = np.full(len(slots), NO_TRADE, np.int64)
        d_out = np.zeros(len(slots), np.int64)
        rounds = _rounds(slots)
        for n, x in enumerate(rounds):
            if len(x) < MIN_ROUND and n:
                rest = np.sort(np.concatenate(rounds[n:]))
                self._apply_in_order(rest, slots, ts_us, trade_us, volume, last_quantity, t_out, d_out)
                break
            t_out[x], d_out[x] = self._round(slots[x], ts_us[x], trade_us[x], volume[x], last_quantity[x])
        return t_out, d_out

    def _round(self, s: I64, ex: I64, tr: I64, v: I64, q: I64) -> tuple[I64, I64]:
        """One round: updates of distinct instruments (the cases as in VolumeTracker.apply)."""
        t = np.where(tr >= 0, tr, ex)
        has = v >= 0
        sd, sv, st, cap = self.day[s], self.volume[s], self.trade[s], self.capture[s]
        local = t + IST_OFFSET_US
        day = local // DAY_US
        same = has & (sd == day)
        grows = same & (v > sv)
        equal = same & (v == sv)
        repeat = equal & ((tr < 0) | (st < 0) | (tr <= st))  # no new trade, nothing changes
        newer_time = equal & ~repeat
        older = has & (sd < day)
        opening = (
            older
            & (local % DAY_US < SESSION_OPEN_GRACE_US)
            & ((cap < 0) | ((cap + IST_OFFSET_US) // DAY_US <= day))
        )
        before = older & ~opening & (tr >= 0) & (tr < cap - cap % US)  # traded before capture
        unseen = older & ~opening & ~before
        delta = np.where(grows, v - sv, 0)
        delta = np.where(opening, v, delta)
        delta = np.where(unseen, np.minimum(np.maximum(q, 0), v), delta)
        self.day[s] = np.where(older, day, sd)
        self.volume[s] = np.where(grows | older, v, sv)
        self.trade[s] = np.where(grows | older | newer_time, tr, st)
        self.exists[s[has]] = True
        self.touched[s[has & ~repeat]] = True
        trade = ~(repeat | before)
        t_out = np.full(len(s), NO_TRADE, np.int64)
        s, t = s[trade], t[trade]
        second = t // US
        place = second % _R
        held, used = self.ring_sec[s, place], self.ring_used[s, place]
        t = np.where((held == second) & (t <= used), used + 1, t)
        keep = held <= second
        self.ring_sec[s[keep], place[keep]] = second[keep]
        self.ring_used[s[keep], place[keep]] = t[keep]
        moves = self.exists[s] & (t > self.last[s])
        self.last[s[moves]] = t[moves]
        t_out[trade] = t
        return t_out, np.where(trade, delta, 0)

    def _apply_in_order(
        self, at: I64, slots: I64, ex: I64, tr: I64, v: I64, q: I64, t_out: I64, d_out: I64
    ) -> None:
        """The updates ``at`` one by one through VolumeTracker, on their instruments' state."""
        tracker = VolumeTracker()
        lent = np.unique(slots[at]).tolist()
        for s in lent:
            if self.exists[s]:
                tracker.state[s] = self._state(s)
            tracker.seconds[s] = self._ring(s)
        for i in at.tolist():
            vol, qty = int(v[i]), int(q[i])
            t_out[i], d_out[i] = tracker.apply(
                int(slots[i]), int(ex[i]), int(tr[i]), None if vol < 0 else vol, None if qty < 0 else qty
            )
        for s in lent:
            st = tracker.state.get(s)
            if st is not None:
                self.exists[s] = True
                self.day[s], self.volume[s], self.trade[s], self.last[s], self.capture[s] = (
                    st.day,
                    st.volume,
                    st.trade_us,
                    st.last_us,
                    st.capture_us,
                )
            self.ring_sec[s] = _EMPTY
            for place, (second, used) in tracker.seconds.get(s, {}).items():
                self.ring_sec[s, place], self.ring_used[s, place] = second, used
        for s in tracker.touched:
            self.touched[s] = True


def _rounds(slots: I64) -> list[I64]:
    """Indexes into ``slots`` by round: the first occurrence of each slot, then the second, ...;
    each in increasing order."""
    n = len(slots)
    if not n:
        return []
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    if len(starts) == n:
        return [np.arange(n)]
    rank = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
    by_rank = order[np.argsort(rank, kind="stable")]
    counts = np.bincount(rank)
    return [np.sort(x) for x in np.split(by_rank, np.cumsum(counts)[:-1])]
