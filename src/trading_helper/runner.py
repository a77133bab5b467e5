"""Long-running commands (``serve``, ``demo``) that stop in bounded time, whatever state the
database and Redis are in.

:func:`run` drives the command's coroutine with its own SIGINT/SIGTERM handling (uvicorn's is
switched off, see :mod:`trading_helper.api.serve`): the first signal cancels the command, whose
``finally`` blocks stop everything in order, each step with its own timeout. A second signal, or
the stop taking longer than ``stop_timeout_s`` (a task that ignores its cancellation, a socket
that never answers), ends the process at once, after the emergency callbacks registered with
:func:`on_emergency_exit` (the demo's embedded PostgreSQL is told to stop there, so it never
outlives the demo).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 9.0  # within the 10 s a stop may take, with a margin for the exit itself
EXIT_STUCK = 3

_emergency: list[Callable[[], None]] = []


def on_emergency_exit(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` (quick, never raising) if the process has to end without a clean stop.
    Returns a function that unregisters it."""
    _emergency.append(callback)
    return lambda: _emergency.remove(callback) if callback in _emergency else None


def _exit_now(reason: str) -> None:
    for callback in list(_emergency):
        with contextlib.suppress(Exception):
            callback()
    sys.stderr.write(f"error: {reason}: exiting now\n")
    sys.stderr.flush()
    os._exit(EXIT_STUCK)


class _Stopper:
    def __init__(self, stop_timeout_s: float) -> None:
        self.stop_timeout_s = stop_timeout_s
        self.signalled: int | None = None
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        """From now on, the process ends within ``stop_timeout_s`` whatever happens."""
        if self._timer is None:
            self._timer = threading.Timer(
                self.stop_timeout_s, _exit_now, args=(f"the stop took longer than {self.stop_timeout_s:g} s",)
            )
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def on_signal(self, sig: int, main: asyncio.Task[Any]) -> None:
        if self.signalled is not None:
            _exit_now(f"{signal.Signals(sig).name} again while stopping")
        self.signalled = sig
        log.warning("%s received: stopping", signal.Signals(sig).name)
        self.arm()
        main.cancel()


async def _guarded(command: Coroutine[Any, Any, None], stopper: _Stopper) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopper.on_signal, sig, main)
    try:
        await command
    except asyncio.CancelledError:
        if stopper.signalled is None:
            raise
    finally:
        stopper.arm()  # what is left (asyncio.run cancelling leftover tasks) is bounded too
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(command: Coroutine[Any, Any, None], *, stop_timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Run ``command`` until it returns or a signal stops it; True when a signal stopped it."""
    stopper = _Stopper(stop_timeout_s)
    try:
        asyncio.run(_guarded(command, stopper))
    finally:
        stopper.disarm()
    return stopper.signalled is not None


def freeze_startup_heap() -> None:
    """Move every object alive now (modules, caches, the calendars and masters loaded at start)
    out of the garbage collector's reach: a full collection walked them all on every run, about
    180,000 objects and 125 ms in ``bench options``, a pause for every request and alert in flight
    (its p99). Called once a long-running process has started; collected first, so only what is
    still in use is frozen."""
    gc.collect()
    gc.freeze()


#: young objects between two collections in a process that parses ticks (the default is 700)
TICK_PROCESS_GEN0 = 100_000


def collect_less_often(gen0: int = TICK_PROCESS_GEN0) -> None:
    """Fewer young-generation collections, for a process that turns frames into ticks: a Kite
    frame of 2,000 full packets makes about 50,000 short-lived objects (packets, depth levels,
    ticks), all alive until the frame is encoded, none in a cycle; with the default threshold the
    collector walked them some 70 times a frame and promoted them to be walked again, ~40 % of
    the parsing cost. Reference counting frees them either way; cycles are still collected."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
