"""The loop of a cluster process (a collector, a writer): its tasks run together until one fails."""

from __future__ import annotations

import asyncio


async def run_until_one_fails(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for the tasks; the first error is raised, and every task is cancelled and awaited
    whatever ends the wait (an error, a cancellation of the caller)."""
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
