"""The writers' receive-to-commit histograms, read from Redis now and every few seconds of a run.

Each writer publishes its cumulative histograms (``receive_to_commit_ms``) in
:data:`~trading_helper.ingest.keys.WRITER_STATUS` about once a second; the difference of two
readings is what was committed between them. :meth:`LagWatch.windows` turns the readings taken
while the bench sends into p99s per window, to see when in a run the slow commits came (a
checkpoint, a takeover, the table outgrowing the buffer cache) rather than only per step.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import redis.asyncio as aioredis

from trading_helper.ingest import keys
from trading_helper.ingest.lags import LagHistograms, from_json, percentile


class LagWatch:
    def __init__(self, redis: aioredis.Redis, every_s: float = 10.0) -> None:
        self.redis = redis
        self.every_s = every_s
        #: (seconds since the start of the sampling, the merged histograms then)
        self.readings: list[tuple[float, LagHistograms]] = []
        self._task: asyncio.Task[None] | None = None

    async def read(self) -> LagHistograms:
        """Every writer's histograms merged, as published now."""
        merged = LagHistograms()
        for raw in (await self.redis.hgetall(keys.WRITER_STATUS)).values():
            merged.merge(from_json(json.loads(raw).get("receive_to_commit_ms") or {}))
        return merged

    async def sample(self) -> None:
        """A reading every ``every_s`` until cancelled (the first at once)."""
        begun = time.monotonic()
        while True:
            self.readings.append((time.monotonic() - begun, await self.read()))
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        """Sample in the background (:meth:`sample`) until :meth:`stop`."""
        self._task = asyncio.create_task(self.sample(), name="receive-to-commit sampler")

    def cancel(self) -> None:
        """End the sampling now (:meth:`stop` then reports how it ended)."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """End the sampling. A sampling that failed raises its error here: windows missing
        because Redis refused a reading are not reported as a quiet run."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])  # our own cancellation propagates; the task's errors do not
        if not task.cancelled() and (error := task.exception()) is not None:
            raise RuntimeError(f"the receive-to-commit sampling failed: {error}") from error

    def windows(self) -> list[dict[str, Any]]:
        """Per window between consecutive readings: its start (s), ticks committed, p99 of
        the total and of the commit stage (ms)."""
        out = []
        for (at, begin), (_, end) in zip(self.readings, self.readings[1:], strict=False):
            total = end.total - begin.total
            commit = end.stages["commit"] - begin.stages["commit"]
            out.append(
                {
                    "at_s": round(at, 1),
                    "ticks": sum(total.values()),
                    "p99": percentile(total, 0.99),
                    "commit_p99": percentile(commit, 0.99),
                }
            )
        return out
