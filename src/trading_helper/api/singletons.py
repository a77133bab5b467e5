"""Work that runs in one API process of a deployment at a time, whichever replica that is.

Every replica (``serve --no-ingest``, and ``serve`` itself) builds the alert service and the
option chains' snapshot recorder, but two replicas evaluating the same alerts would deliver each
trigger twice (a Telegram message is not deduplicated by its receiver), and two recorders would
do every snapshot twice. So each such job runs under a lease in Redis (:mod:`trading_helper.
cluster.lease`, role ``api``), named after the channel or hash it reads (a deployment's; tests
and side-by-side deployments on one Redis keep apart): one replica holds it and runs the job,
the others stand by, and when the holder dies a standby takes the lease and starts the job
within about a second (its Redis connections close; at most the lease's TTL otherwise).

Without Redis, or with a Redis that runs no scripts (the demo's in-process stand-in, which serves
one process only), there is nothing to coordinate with: the jobs just run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from trading_helper.cluster.lease import LeaseGroup
from trading_helper.ingest.redisconn import REDIS_FAILURES
from trading_helper.supervisor import Supervisor

log = logging.getLogger(__name__)

ROLE = "api"
#: the supervised task that takes, renews and gives up the leases
TASK = "api-singletons"


@dataclass(frozen=True, slots=True)
class Job:
    """A supervised task of a singleton job (started with the supervisor's ``expected`` errors)."""

    task: str
    run: Callable[[], Awaitable[None]]
    expected: tuple[type[Exception], ...] = ()


async def _runs_scripts(redis: aioredis.Redis) -> bool:
    """False for a Redis that refuses Lua (the demo's in-process stand-in): leases need scripts,
    and such a Redis serves one process only. Unreachable counts as True: the leases wait for it."""
    try:
        await redis.eval("return 1", 0)
    except ResponseError as exc:
        log.info("this Redis runs no scripts (%s): alerts and snapshots run here, uncoordinated", exc)
        return False
    except REDIS_FAILURES:
        pass
    return True


class Singletons:
    """Lease name -> the tasks run while this process holds it."""

    def __init__(self, redis: aioredis.Redis | None, supervisor: Supervisor, *, ttl_s: float = 5.0) -> None:
        self.supervisor = supervisor
        self.jobs: dict[str, list[Job]] = {}
        self._redis = redis
        self._ttl_s = ttl_s
        self.leases: LeaseGroup | None = None
        self._looping = False

    def add(self, name: str, *jobs: Job) -> None:
        self.jobs[name] = list(jobs)

    async def _start(self, name: str) -> None:
        for job in self.jobs[name]:
            self.supervisor.start(job.task, job.run, expected=job.expected)
        log.info("running %s in this process", ", ".join(job.task for job in self.jobs[name]))

    async def _stop(self, name: str) -> None:
        await self.supervisor.stop([job.task for job in self.jobs[name]])

    async def start(self) -> None:
        """Take what is free now (so a single process runs its jobs from the start), then keep
        stepping in the background."""
        if not self.jobs:
            return
        if self._redis is None or not await _runs_scripts(self._redis):
            self._redis = None  # nothing to coordinate with: the jobs run here
            for name in self.jobs:
                await self._start(name)
            return
        # not a fair share: replicas are standbys of each other (and other deployments on the
        # same Redis, counted as members of the role too, must not shrink this one's share)
        self.leases = LeaseGroup(
            self._redis, ROLE, on_acquired=self._start, on_lost=self._stop, ttl_s=self._ttl_s, fair=False
        )
        names = list(self.jobs)
        await self.leases.step(names, renew=False)

        async def wanted() -> list[str]:
            return names

        leases = self.leases
        # supervised: an unexpected error is logged, restarted and shown in /health (TASK)
        self.supervisor.start(TASK, lambda: leases.run(wanted))
        self._looping = True

    def held(self) -> list[str]:
        if self._redis is None:
            return list(self.jobs)
        return sorted(self.leases.held) if self.leases is not None else []

    def status(self) -> dict[str, list[str]]:
        """What this process runs (``held``) and stands by for (another replica runs it)."""
        held = self.held()
        return {"held": held, "standby": sorted(n for n in self.jobs if n not in held)}

    async def stop(self) -> None:
        """Stop the jobs and release their leases (a standby takes them at its next step)."""
        if self._looping:  # the lease loop releases everything as it ends
            await self.supervisor.stop([TASK])
            self._looping = False
        elif self.leases is not None:
            await self.leases.release_all()
        elif self._redis is None:
            for name in self.jobs:
                await self._stop(name)
