"""The cluster bench's child processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

from trading_helper.cluster.leasekeys import lease_owners
from trading_helper.ingest import keys
from trading_helper.ingest.redisconn import reply_text


class Child:
    """One ``trading-helper`` process, its output in ``workdir/<name>.log``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name, self.args, self.env, self.workdir = name, args, env, workdir
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        with open(self.workdir / f"{self.name}.log", "ab") as log:  # noqa: ASYNC230 - once per start
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "trading_helper.cli", *self.args,
                env={**os.environ, **self.env}, stdout=log, stderr=log, cwd=self.workdir,
            )  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    async def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.kill()
            await self.proc.wait()


def pid_of(owner: str | None) -> int | None:
    try:
        return int(owner.split(":")[1]) if owner else None
    except (IndexError, ValueError):
        return None


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) * _TICK_S  # utime, stime (fields 14, 15 of stat)


def _machine_busy_s() -> float:
    """Busy CPU seconds of all cores since boot (/proc/stat: everything but idle and iowait)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) * _TICK_S


def _postgres_pids() -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if stat.read_text().strip() == "postgres":
                pids.append(int(stat.parent.name))
    return pids


class CpuMeter:
    """CPU used per role over a window, in cores (CPU seconds per second of the window): each
    role's processes (a name's prefix before '-': collector, writer, api), the bench process itself
    (the stand-in broker), Redis, PostgreSQL's processes (backends that ended inside the window are
    missed: approximate) and the whole machine. Far steadier run to run than a latency percentile,
    so it says where the CPU of a tick goes."""

    def __init__(self) -> None:
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._started = self._ended = 0.0

    def _read(self, pids: dict[str, int]) -> dict[str, float]:
        seen = {name: cpu_seconds(pid) for name, pid in pids.items()}
        seen |= {f"postgres-{pid}": cpu_seconds(pid) for pid in _postgres_pids()}
        seen["standin"] = time.process_time()
        seen["machine"] = _machine_busy_s()
        return {name: s for name, s in seen.items() if s is not None}

    def start(self, pids: dict[str, int]) -> None:
        self._first, self._started = self._read(pids), time.monotonic()

    def sample(self, pids: dict[str, int]) -> None:
        """Read again (a process killed later keeps this last reading)."""
        self._last |= self._read(pids)
        self._ended = time.monotonic()

    def seconds(self) -> float:
        return self._ended - self._started

    def cores(self) -> dict[str, float]:
        wall = self.seconds()
        used: dict[str, float] = {}
        for name, last in self._last.items():
            role = name.split("-")[0]
            used[role] = used.get(role, 0.0) + last - self._first.get(name, 0.0)
        return {role: round(s / wall, 3) for role, s in sorted(used.items())} if wall > 0 else {}

    def us_per_tick(self, ticks_per_s: float) -> dict[str, float]:
        """CPU microseconds per tick of each role at that rate."""
        return (
            {role: round(c * 1e6 / ticks_per_s, 1) for role, c in self.cores().items()} if ticks_per_s else {}
        )


async def wait_takeover(
    redis: aioredis.Redis, role: str, names: list[str], dead_pid: int, killed_at: float
) -> float | None:
    """Seconds from ``killed_at`` until every name the dead process held is leased by another (a
    collector's shard: with its feed connected), None after 60 s."""
    pending = set(names)
    while pending and time.time() - killed_at < 60:
        owners = await lease_owners(redis, role, sorted(pending))
        status = {reply_text(k): json.loads(v) for k, v in (await redis.hgetall(keys.SHARD_STATUS)).items()}
        for name, owner in owners.items():
            pid = pid_of(owner)
            if pid is None or pid == dead_pid:
                continue
            if role == "writer" or (
                status.get(name, {}).get("owner") == owner and status[name].get("feed_state") == "connected"
            ):
                pending.discard(name)
        await asyncio.sleep(0.1)
    return None if pending else time.time() - killed_at
