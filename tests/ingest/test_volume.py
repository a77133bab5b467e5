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
