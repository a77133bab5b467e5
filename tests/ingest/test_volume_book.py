"""VolumeBook (the volume rules by rounds of numpy operations) gives exactly what VolumeTracker
(the rules one update at a time) gives: the same candle times and volume increments, the same
changed state rows and the same state, on random sequences of batches, capture starts and merges
of committed state (instruments with many updates in one batch take the sequential path)."""

from __future__ import annotations

from datetime import datetime, time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.oracle import IST
from trading_helper.ingest.volume import NO_TRADE, US, VolumeTracker, to_us
from trading_helper.ingest.volume_book import MIN_ROUND, VolumeBook

BASE = to_us(datetime.combine(datetime(2026, 11, 23).date(), time(9, 10), IST))  # a Monday, 09:10 IST

update = st.tuples(
    st.integers(1, 40),  # instrument
    st.integers(-3_600, 90_000),  # exchange time, seconds from BASE (the next day too)
    st.sampled_from([0, 0, 0, 1, 999_999]),  # its microseconds
    st.one_of(st.just(None), st.integers(-400, 5)),  # trade time, seconds before the exchange time
    st.one_of(st.just(None), st.integers(0, 3_000)),  # cumulative volume
    st.one_of(st.just(None), st.integers(0, 50)),  # last quantity
)
batch = st.lists(update, max_size=60)
# one instrument many times: more rounds than MIN_ROUND
burst = st.tuples(st.integers(1, 40), st.lists(update, min_size=MIN_ROUND + 2, max_size=40))
reset = st.tuples(st.sets(st.integers(1, 40), min_size=1, max_size=10), st.integers(-3_600, 90_000))
merged = st.lists(
    st.tuples(
        st.integers(1, 40),
        st.integers(-1, 2),  # IST day, relative to BASE's
        st.integers(-1, 3_000),
        st.integers(-3_600, 90_000),
        st.integers(-3_600, 90_000),
        st.integers(-3_600, 90_000),
    ),
    max_size=10,
    unique_by=lambda r: r[0],
)
step = st.one_of(
    st.tuples(st.just("batch"), batch),
    st.tuples(st.just("burst"), burst),
    st.tuples(st.just("reset"), reset),
    st.tuples(st.just("merge"), merged),
)


def _columns(updates: list[tuple[int, int, int, int | None, int | None, int | None]]) -> list[np.ndarray]:
    rows = []
    for iid, sec, us, before, vol, qty in updates:
        ex = BASE + sec * US + us
        tr = -1 if before is None else ex - before * US
        rows.append((iid, ex, tr, -1 if vol is None else vol, -1 if qty is None else qty))
    return [np.array(c, np.int64) for c in zip(*rows, strict=True)] if rows else [np.zeros(0, np.int64)] * 5


@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=1, max_size=12))
def test_book_equals_tracker(steps: list[tuple[str, object]]) -> None:
    tracker, book = VolumeTracker(), VolumeBook(capacity=4)  # small: the arrays grow
    base_day = (BASE + 19_800 * US) // (86_400 * US)
    for kind, arg in steps:
        if kind == "reset":
            ids, sec = arg  # type: ignore[misc]
            tracker.reset(ids, BASE + sec * US)
            book.reset(ids, BASE + sec * US)
        elif kind == "merge":
            rows = [
                (i, base_day + d if d >= 0 else -1, v, BASE + a * US, BASE + b * US, BASE + c * US)
                for i, d, v, a, b, c in arg  # type: ignore[attr-defined]
            ]
            tracker.merge(rows)
            book.merge(rows)
        else:
            if kind == "burst":
                iid, updates = arg  # type: ignore[misc]
                updates = [(iid, *u[1:]) for u in updates]
            else:
                updates = arg  # type: ignore[assignment]
            iids, ex, tr, vol, qty = _columns(updates)
            want = [
                tracker.apply(i, e, t, None if v < 0 else v, None if q < 0 else q)
                for i, e, t, v, q in zip(
                    iids.tolist(), ex.tolist(), tr.tolist(), vol.tolist(), qty.tolist(), strict=True
                )
            ]
            got_t, got_d = book.apply(book.slots(iids), ex, tr, vol, qty)
            assert list(zip(got_t.tolist(), got_d.tolist(), strict=True)) == want
        assert sorted(book.take_changes()) == sorted(tracker.take_changes())
        for iid in range(1, 41):
            assert book.state_of(iid) == tracker.state.get(iid), iid
            assert book.seconds_of(iid) == tracker.seconds.get(iid, {}), iid
    assert book.instruments() == set(tracker.state)


def test_a_batch_of_distinct_instruments_is_one_round() -> None:
    """The writer's usual batch: each instrument once; ties in a second move by a microsecond."""
    book = VolumeBook()
    iids = np.arange(1, 2_001, dtype=np.int64)
    ex = np.full(2_000, BASE, np.int64)
    t, d = book.apply(book.slots(iids), ex, ex, np.full(2_000, 100, np.int64), np.full(2_000, 5, np.int64))
    assert (t == BASE).all() and (d == 100).all()  # before 09:16 IST: the day's volume so far
    t, d = book.apply(book.slots(iids), ex, ex, np.full(2_000, 130, np.int64), np.full(2_000, 30, np.int64))
    assert (t == BASE + 1).all() and (d == 30).all()
    t, _ = book.apply(book.slots(iids), ex, ex, np.full(2_000, 130, np.int64), np.full(2_000, 30, np.int64))
    assert (t == NO_TRADE).all()  # the same trade again
    assert len(book.take_changes()) == 2_000 and not book.take_changes()
