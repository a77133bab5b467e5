"""A FeedSink that keeps what a live feed hands it, and a polling wait, for broker feed tests."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence

from trading_helper.brokers.base import FeedEvent, FeedState
from trading_helper.models import Tick


class CollectingSink:
    def __init__(self) -> None:
        self.frames: list[list[Tick]] = []
        self.rejects: Counter[str] = Counter()
        self.events: list[FeedEvent] = []

    async def on_ticks(self, ticks: Sequence[Tick]) -> None:
        self.frames.append(list(ticks))

    def on_reject(self, reason: str, count: int = 1) -> None:
        self.rejects[reason] += count

    async def on_event(self, event: FeedEvent) -> None:
        self.events.append(event)

    @property
    def ticks(self) -> list[Tick]:
        return [tick for frame in self.frames for tick in frame]

    def states(self) -> list[FeedState]:
        return [event.state for event in self.events]


async def wait_until(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    """Poll ``predicate`` until true; fail the test after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s}s")
        await asyncio.sleep(0.01)
