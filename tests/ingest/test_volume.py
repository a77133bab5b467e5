"""The first trade after capture starts, at the one-second precision brokers stamp trades with,
before and after the 09:16 IST grace (the e2e tests push ticks right after a connect, and a CI
run can start at any hour)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trading_helper.ingest.volume import NO_TRADE, US, VolumeTracker, to_us

# 03:00 UTC = 08:30 IST (inside the pre-open grace), 06:00 UTC = 11:30 IST (after it)
PRE_OPEN = datetime(2026, 12, 2, 3, 0, 0, tzinfo=UTC)
MIDDAY = datetime(2026, 12, 2, 6, 0, 0, tzinfo=UTC)


def first_trade(capture: datetime, traded: datetime) -> tuple[int, int]:
    tracker = VolumeTracker()
    tracker.reset({1}, to_us(capture))
    return tracker.apply(1, to_us(traded) + US, to_us(traded), volume=5_000, last_quantity=7)


@pytest.mark.parametrize("second", [PRE_OPEN, MIDDAY])
def test_a_trade_stamped_with_the_second_capture_started_in_is_a_trade(second: datetime) -> None:
    capture = second + timedelta(milliseconds=700)  # the connect, 0.7 s into the second
    t, delta = first_trade(capture, second)  # the broker's stamp: that whole second
    assert t == to_us(second)
    # before 09:16 IST the day's volume so far is the pre-open match: all of it; later only the trade
    assert delta == (5_000 if second is PRE_OPEN else 7)


def test_after_the_grace_a_trade_from_an_earlier_second_than_capture_is_no_new_trade() -> None:
    capture = MIDDAY + timedelta(milliseconds=10)
    assert first_trade(capture, MIDDAY - timedelta(seconds=1)) == (NO_TRADE, 0)
    assert first_trade(capture, MIDDAY - timedelta(minutes=40)) == (NO_TRADE, 0)


def test_before_the_grace_a_trade_from_before_capture_carries_the_pre_open_volume() -> None:
    capture = PRE_OPEN + timedelta(milliseconds=10)
    assert first_trade(capture, PRE_OPEN - timedelta(seconds=1)) == (to_us(PRE_OPEN) - US, 5_000)


def test_merging_committed_state_takes_the_later_baseline_and_never_an_older_one() -> None:
    tracker = VolumeTracker()
    t0 = to_us(MIDDAY)
    tracker.reset({1, 2}, t0 - US)
    tracker.apply(1, t0, t0, volume=1_000, last_quantity=1)
    tracker.apply(2, t0, t0, volume=9_000, last_quantity=1)
    tracker.take_changes()
    day = tracker.state[1].day
    # instrument 1 went on in another stream (to 4_000); instrument 2's committed row is older
    # than what this tracker holds; instrument 3 is new here
    tracker.merge(
        [
            (1, day, 4_000, t0 + 5 * US, t0 + 5 * US, t0 - US),
            (2, day, 2_000, t0 - 9 * US, t0 - 9 * US, t0 - US),
            (3, day, 500, t0, t0, t0 - US),
        ]
    )
    assert not tracker.take_changes()  # nothing to write back: it is what is committed
    assert tracker.apply(1, t0 + 6 * US, t0 + 6 * US, volume=4_100, last_quantity=1) == (t0 + 6 * US, 100)
    assert tracker.apply(2, t0 + 6 * US, t0 + 6 * US, volume=9_050, last_quantity=1) == (t0 + 6 * US, 50)
    assert tracker.apply(3, t0 + 6 * US, t0 + 6 * US, volume=600, last_quantity=1) == (t0 + 6 * US, 100)
    # a trade row never takes a time at or before the other stream's last one in that second
    tracker.merge([(1, day, 4_100, t0 + 6 * US + 9, t0 + 6 * US, t0 - US)])
    assert tracker.apply(1, t0 + 6 * US, t0 + 6 * US, volume=4_200, last_quantity=1) == (
        t0 + 6 * US + 10,
        100,
    )
