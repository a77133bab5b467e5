"""Long-lived tasks under supervision: nothing ends silently.

Every task that should run until the process stops (the broker feed, the database writer, the
coverage extension, the housekeeping ...) runs under a :class:`Supervisor`. A task that returns or
raises is logged with its error, counted (``th_task_restarts_total{task}``), marked down
(``th_task_up{task}`` 0, ``/health`` 503 ``ingest_stopped``) and started again after a capped,
jittered backoff; the backoff starts over once a run has lasted ``healthy_after_s``.

A *one-shot* task (the service's start work: flavour, subscriptions, coverage) is retried the same
way until it returns once; then it is ``done``. :meth:`Supervisor.stop` is bounded: a task that
ignores its cancellation (a read stuck in a socket) is abandoned after the timeout and named in
the log, so a stop never hangs.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

TASK_UP = Gauge("th_task_up", "1 while a supervised task runs (or a one-shot task is done)", ["task"])
TASK_RESTARTS = Counter(
    "th_task_restarts_total", "Supervised tasks started again after ending or dying", ["task"]
)

Job = Callable[[], Awaitable[None]]


class TaskState(enum.StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"  # ended or died: waiting for its backoff before the next start
    DONE = "done"  # a one-shot task that completed
    STOPPED = "stopped"


@dataclass(slots=True)
class TaskInfo:
    name: str
    oneshot: bool = False
    state: TaskState = TaskState.RUNNING
    backoff_max_s: float | None = None
    #: errors this task expects now and then (a database away): logged in one line, no traceback
    expected: tuple[type[Exception], ...] = ()
    restarts: int = 0
    last_error: str | None = None
    #: the class of the last error only, for public answers (``/health``)
    last_error_type: str | None = None
    since: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def down(self) -> bool:
        return self.state == TaskState.RESTARTING

    def as_json(self) -> dict[str, object]:
        return {
            "state": str(self.state),
            "restarts": self.restarts,
            "last_error": self.last_error,
            "since": self.since.isoformat(),
        }

    def enter(self, state: TaskState) -> None:
        self.state = state
        self.since = datetime.now(UTC)
        TASK_UP.labels(self.name).set(1 if state in (TaskState.RUNNING, TaskState.DONE) else 0)


def describe(exc: BaseException) -> str:
    """One line for logs and status: the class and its message (already free of secrets: DSNs are
    redacted where connections are made, tokens never enter exception messages)."""
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Supervisor:
    def __init__(
        self, *, backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0, healthy_after_s: float = 30.0
    ) -> None:
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.healthy_after_s = healthy_after_s
        self.tasks: dict[str, TaskInfo] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}

    def start(
        self,
        name: str,
        job: Job,
        *,
        oneshot: bool = False,
        backoff_max_s: float | None = None,
        expected: tuple[type[Exception], ...] = (),
    ) -> None:
        """Run ``job()`` as task ``name`` until :meth:`stop` (or, ``oneshot``, until it returns).
        ``backoff_max_s``: this task's cap on the wait between runs (default: the supervisor's);
        ``expected``: errors logged without a traceback (still counted and shown)."""
        if name in self._loops and not self._loops[name].done():
            raise RuntimeError(f"task {name} is already supervised")
        info = TaskInfo(name, oneshot=oneshot, backoff_max_s=backoff_max_s, expected=expected)
        info.enter(TaskState.RUNNING)
        TASK_RESTARTS.labels(name)  # exported from 0, so a rate over it starts at the first run
        self.tasks[name] = info
        self._loops[name] = asyncio.create_task(self._keep(info, job), name=name)

    def down(self) -> list[TaskInfo]:
        """Tasks that ended or died and wait for their restart."""
        return [t for t in self.tasks.values() if t.down]

    def status(self) -> dict[str, dict[str, object]]:
        return {name: info.as_json() for name, info in self.tasks.items()}

    async def _keep(self, info: TaskInfo, job: Job) -> None:
        delay = self.backoff_initial_s
        while True:
            began = time.monotonic()
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._raise_if_stopping()
                info.last_error, info.last_error_type = describe(exc), type(exc).__name__
                if isinstance(exc, info.expected):
                    log.warning("task %s failed: %s", info.name, info.last_error)
                else:
                    log.error("task %s died: %s", info.name, info.last_error, exc_info=exc)
            else:
                self._raise_if_stopping()
                if info.oneshot:
                    info.enter(TaskState.DONE)
                    return
                info.last_error, info.last_error_type = "ended without an error", "ended"
                log.error("task %s ended although it should run until stopped", info.name)
            if time.monotonic() - began >= self.healthy_after_s:
                delay = self.backoff_initial_s
            info.enter(TaskState.RESTARTING)
            wait = delay * (0.8 + 0.4 * random.random())
            log.warning("task %s restarts in %.1f s", info.name, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, info.backoff_max_s or self.backoff_max_s)
            info.restarts += 1
            TASK_RESTARTS.labels(info.name).inc()
            info.enter(TaskState.RUNNING)

    @staticmethod
    def _raise_if_stopping() -> None:
        """A job that swallowed its cancellation must not be restarted: the stop goes on."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    async def stop(self, names: Iterable[str] | None = None, *, timeout_s: float = 5.0) -> list[str]:
        """Cancel the tasks ``names`` (default: all) and wait for them at most ``timeout_s``.
        Returns the names of tasks that did not finish in time (abandoned, and logged)."""
        chosen = list(self._loops) if names is None else [n for n in names if n in self._loops]
        loops = [self._loops.pop(n) for n in chosen]
        for task in loops:
            task.cancel()
        stuck: list[str] = []
        if loops:
            _, pending = await asyncio.wait(loops, timeout=timeout_s)
            stuck = sorted(t.get_name() for t in pending)
            if stuck:
                log.error(
                    "tasks %s did not stop within %.1f s of their cancellation: abandoned",
                    ", ".join(stuck),
                    timeout_s,
                )
        for name in chosen:
            self.tasks[name].enter(TaskState.STOPPED)
        return stuck
