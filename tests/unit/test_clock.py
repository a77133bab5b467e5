"""The one data clock: real by default, simulated (fast, anchored, jumping through a file) by TH_CLOCK."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trading_helper import clock
from trading_helper.errors import ConfigError


@pytest.fixture(autouse=True)
def _fresh_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(clock.ENV_VAR, raising=False)
    clock.reload()
    yield
    clock.reload()


def test_default_is_the_real_clock() -> None:
    before = datetime.now(UTC)
    got = clock.now()
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert before <= got <= datetime.now(UTC)


def test_anchored_fast_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    anchor = time.time() - 10.0  # simulated time started 10 real seconds ago at 60x
    monkeypatch.setenv(clock.ENV_VAR, f"2026-11-25T09:00:00+05:30@60@{anchor!r}")
    clock.reload()
    got = clock.now()
    expected = datetime(2026, 11, 25, 3, 30, tzinfo=UTC) + timedelta(minutes=10)
    assert got.utcoffset() == timedelta(0)
    assert abs((got - expected).total_seconds()) < 60  # one real second of slack at 60x


def test_a_clock_file_is_re_read_when_it_changes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "clock"
    path.write_text(clock.SimClock(datetime(2026, 11, 25, 3, 0, tzinfo=UTC), 1.0, time.time()).spec())
    monkeypatch.setenv(clock.ENV_VAR, f"@{path}")
    clock.reload()
    assert abs((clock.now() - datetime(2026, 11, 25, 3, 0, tzinfo=UTC)).total_seconds()) < 5
    # the driver jumps the night: a new start, written by rename as the soak does
    tmp = tmp_path / "clock.new"
    tmp.write_text(clock.SimClock(datetime(2026, 11, 26, 3, 0, tzinfo=UTC), 1.0, time.time()).spec())
    os.replace(tmp, path)
    deadline = time.monotonic() + 5
    while clock.now() < datetime(2026, 11, 26, tzinfo=UTC):
        assert time.monotonic() < deadline, "the jump was never seen"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "spec",
    [
        "2026-11-25T09:00:00@60",
        "2026-11-25T09:00:00+05:30",
        "yesterday@2",
        "2026-11-25T09:00:00+05:30@-1",
        "2026-11-25T09:00:00+05:30@1@2@3",
    ],
)
def test_bad_specs_are_refused_by_name(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.setenv(clock.ENV_VAR, spec)
    clock.reload()
    with pytest.raises(ConfigError, match="TH_CLOCK"):
        clock.now()


def test_a_slowdown_is_seen_at_the_next_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The soak drops from 600x to real speed when a fault starts: a process that read the clock a
    moment before must not run on at 600x (minutes ahead of the driver) and jump back later."""
    path = tmp_path / "clock"
    fast = clock.SimClock(datetime(2026, 11, 25, 7, 0, tzinfo=UTC), 600.0, time.time())
    path.write_text(fast.spec())
    monkeypatch.setenv(clock.ENV_VAR, f"@{path}")
    clock.reload()
    clock.now()  # the process reads the clock ...
    time.sleep(0.05)  # ... the driver's clock moves on 30 simulated seconds ...
    slow = clock.SimClock(fast.now(), 1.0, time.time())  # ... and slows down to real speed
    tmp = tmp_path / "clock.new"
    tmp.write_text(slow.spec())
    os.replace(tmp, path)
    for _ in range(20):  # every later reading follows the driver's clock
        got = clock.now()
        assert abs((got - slow.now()).total_seconds()) < 1, (got, slow.now())
        time.sleep(0.01)
