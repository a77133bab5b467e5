"""looplag.LoopLag: a loop blocked by synchronous work is seen late, named by the watchdog with
where it was blocked, and reported once in the status; garbage collections are timed."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest

from trading_helper.looplag import LoopLag


def block_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)  # synchronous work on the loop's thread


async def test_a_blocked_loop_is_reported_with_where_it_was_blocked(caplog: pytest.LogCaptureFixture) -> None:
    lag = LoopLag("test")
    with caplog.at_level(logging.WARNING, logger="trading_helper.looplag"):
        lag.start()
        try:
            await asyncio.sleep(0.3)
            assert lag.take()["loop_lag_ms_max"] < 500  # idle: on time
            block_the_loop_for(1.5)
            await asyncio.sleep(0.3)
            gc.collect()
            taken = lag.take()
            assert taken["loop_lag_ms_max"] >= 1000 and taken["gc_pause_ms_max"] > 0
            assert lag.take()["loop_lag_ms_max"] < 500  # reset by the take
        finally:
            await lag.stop()
    blocked = [r.getMessage() for r in caplog.records if "blocked for over" in r.getMessage()]
    assert len(blocked) == 1 and "block_the_loop_for" in blocked[0] and "time.sleep" in blocked[0]
    assert any("ran 1." in r.getMessage() and "s late" in r.getMessage() for r in caplog.records)
