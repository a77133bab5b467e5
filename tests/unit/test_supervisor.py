"""The supervisor on its own: restarts with capped backoff, one-shot tasks, bounded stops."""

from __future__ import annotations

import asyncio
import itertools
import time

from trading_helper.supervisor import Supervisor, TaskState


async def test_a_dying_task_is_restarted_with_capped_backoff_and_reported() -> None:
    supervisor = Supervisor(backoff_initial_s=0.05, backoff_max_s=0.1)
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(time.monotonic())
        if len(starts) < 5:
            raise ValueError(f"failure {len(starts)}")
        await asyncio.Event().wait()

    supervisor.start("flaky", flaky)
    try:
        for _ in range(300):
            if len(starts) == 5:
                break
            await asyncio.sleep(0.01)
        assert len(starts) == 5
        info = supervisor.tasks["flaky"]
        assert info.state == TaskState.RUNNING and info.restarts == 4
        assert info.last_error == "ValueError: failure 4" and info.last_error_type == "ValueError"
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert gaps[0] >= 0.04 and all(g <= 0.1 * 1.2 + 0.1 for g in gaps), gaps  # jitter is +-20 %
        assert supervisor.down() == []
    finally:
        assert await supervisor.stop() == []
    assert supervisor.tasks["flaky"].state == TaskState.STOPPED


async def test_a_task_that_returns_counts_as_ended_and_a_oneshot_as_done() -> None:
    supervisor = Supervisor(backoff_initial_s=5.0)
    ran = asyncio.Event()

    async def returns() -> None:
        ran.set()

    supervisor.start("forever", returns)
    supervisor.start("once", returns, oneshot=True)
    await ran.wait()
    await asyncio.sleep(0.01)
    assert supervisor.tasks["once"].state == TaskState.DONE
    forever = supervisor.tasks["forever"]
    assert forever.state == TaskState.RESTARTING and forever.last_error == "ended without an error"
    assert [t.name for t in supervisor.down()] == ["forever"]
    await supervisor.stop()


async def test_stop_abandons_a_task_that_ignores_its_cancellation() -> None:
    supervisor = Supervisor()
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # as a read stuck in a socket would: the cancellation is not acted on

    supervisor.start("stubborn", stubborn)
    await asyncio.sleep(0.01)
    began = time.monotonic()
    assert await supervisor.stop(timeout_s=0.2) == ["stubborn"]
    assert time.monotonic() - began < 1.0
    release.set()  # it ends now, swallowing its cancellation: the supervisor must not restart it
    await asyncio.sleep(0.05)
    assert all(t.get_name() != "stubborn" for t in asyncio.all_tasks())
    assert supervisor.tasks["stubborn"].restarts == 0
