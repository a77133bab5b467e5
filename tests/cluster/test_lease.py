"""Leases on a real Redis (cluster/lease.py): one owner per name, fair shares, release, takeover
by TTL and, from a process that died (SIGKILL), by its connections closing; renewals that slow
work does not hold up; a Redis refusing CLIENT LIST."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from trading_helper.bench.soak.processes import RedisServer
from trading_helper.cluster.lease import LeaseGroup
from trading_helper.cluster.leasekeys import lease_owners


def group(redis: aioredis.Redis, role: str, log: list[str], **kwargs: object) -> LeaseGroup:
    async def acquired(name: str) -> None:
        log.append(f"+{name}")

    async def lost(name: str) -> None:
        log.append(f"-{name}")

    return LeaseGroup(redis, role, on_acquired=acquired, on_lost=lost, ttl_s=1.0, **kwargs)  # type: ignore[arg-type]


async def test_each_name_has_one_owner_and_shares_spread(redis_url: str) -> None:
    role = f"test-{uuid.uuid4().hex[:8]}"
    redis = aioredis.Redis.from_url(redis_url)
    names = [f"s{i}" for i in range(5)]
    a_log: list[str] = []
    b_log: list[str] = []
    a, b = group(redis, role, a_log), group(redis, role, b_log)
    try:
        await a.step(names)
        assert sorted(a.held) == names  # alone: everything
        await b.step(names)  # b announces itself; a's share drops to 3 on its next step
        await a.step(names)
        await b.step(names)
        assert len(a.held) == 3 and len(b.held) == 2 and not set(a.held) & set(b.held)
        owners = await lease_owners(redis, role, names)
        assert {n for n, o in owners.items() if o == a.owner} == set(a.held)
        assert {n for n, o in owners.items() if o == b.owner} == set(b.held)
        assert sorted(a_log) == sorted([f"+{n}" for n in names] + [f"-{n}" for n in names if n in b.held])
        # a dies (stops renewing, releases nothing): b takes everything within ttl + a step
        a_had = sorted(a.held)
        died = time.monotonic()
        while len(b.held) < 5:
            await asyncio.sleep(1.0 / 3)
            await b.step(names)
            assert time.monotonic() - died < 4.0
        assert time.monotonic() - died >= 0.9  # not before a's leases expired
        await a.step(names)  # a wakes up: its renewals fail, it stops the work
        assert not a.held and sorted(a_log[-3:]) == [f"-{n}" for n in a_had]
        await b.release_all()
        assert set((await lease_owners(redis, role, names)).values()) == {None}
    finally:
        await a.aclose()
        await redis.aclose()


async def test_max_held_and_a_takeover_is_timed(redis_url: str) -> None:
    role = f"test-{uuid.uuid4().hex[:8]}"
    redis = aioredis.Redis.from_url(redis_url)
    log: list[str] = []
    first, standby = group(redis, role, log, max_held=1), group(redis, role, log, max_held=1)
    try:
        await first.step(["only"])
        await first.mark_alive()
        await standby.step(["only"])
        assert list(first.held) == ["only"] and not standby.held
        for _ in range(8):  # first dies; the standby keeps trying
            await asyncio.sleep(0.25)
            await standby.step(["only"])
        assert list(standby.held) == ["only"]
        ((name, seconds),) = standby.takeovers
        assert name == "only" and 1.0 <= seconds < 2.5  # alive, connected, stalled: by TTL
    finally:
        await first.aclose()
        await standby.release_all()
        await redis.aclose()


_HOLDER = """
import asyncio, sys
import redis.asyncio as aioredis
from trading_helper.cluster.lease import LeaseGroup

async def main():
    async def nothing(_):
        return None
    redis = aioredis.Redis.from_url(sys.argv[1])
    group = LeaseGroup(redis, sys.argv[2], on_acquired=nothing, on_lost=nothing, ttl_s=30.0, max_held=1)
    task = asyncio.create_task(group.run(lambda: asyncio.sleep(0, ["only"])))
    while not group.held:
        await asyncio.sleep(0.05)
    print("held", flush=True)
    await task

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def holding(redis_url: str, role: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A process holding ``role``'s lease ``only`` (it said so), killed on the way out."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, redis_url, role, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"held\n"
        yield holder
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_a_killed_owner_is_taken_over_long_before_its_ttl(redis_url: str) -> None:
    """A SIGKILL closes the owner's connections: Redis sees it gone, and a standby takes its
    lease within about a second, not after the 30 s TTL."""
    role = f"test-{uuid.uuid4().hex[:8]}"
    redis = aioredis.Redis.from_url(redis_url)
    log: list[str] = []
    standby = LeaseGroup(redis, role, on_acquired=lambda n: asyncio.sleep(0, log.append(n)),
                         on_lost=lambda n: asyncio.sleep(0), ttl_s=30.0, max_held=1)  # fmt: skip
    try:
        async with holding(redis_url, role) as holder:
            for _ in range(6):  # the holder is alive: nothing to take
                await standby.step(["only"])
                await asyncio.sleep(0.2)
            assert not standby.held
            holder.kill()
            await holder.wait()
            killed = time.monotonic()
            while not standby.held:
                await standby.step(["only"])
                assert time.monotonic() - killed < 5.0, "not taken over within 5 s of the kill (TTL 30 s)"
                await asyncio.sleep(0.1)
            assert log == ["only"]
            assert (await lease_owners(redis, role, ["only"]))["only"] == standby.owner
    finally:
        await standby.release_all()
        await redis.aclose()


async def test_run_takes_a_killed_owners_lease_when_the_presence_watcher_sees_it_gone(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run`` steps at once when its watcher sees an owner dead: with the step's cadence at a
    minute, the standby still takes the lease of a killed holder (a writer's streams stall until
    it: the cadence, 0.5 s, made takeovers 0.5-1 s after a kill)."""
    monkeypatch.setattr(LeaseGroup, "step_every_s", property(lambda self: 60.0))
    role = f"test-{uuid.uuid4().hex[:8]}"
    redis = aioredis.Redis.from_url(redis_url)
    log: list[str] = []
    standby = group(redis, role, log, max_held=1, watch=True)
    standby.ttl_s = 30.0
    running = None
    try:
        async with holding(redis_url, role) as holder:
            running = asyncio.create_task(standby.run(lambda: asyncio.sleep(0, ["only"])))
            for _ in range(100):  # its first step found the lease held; the watcher has looked
                if standby._probed:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert not standby.held
            holder.kill()
            await holder.wait()
            killed = time.monotonic()
            while not standby.held:
                assert not running.done(), running
                assert time.monotonic() - killed < 20.0, "not taken: the step waited for its cadence"
                await asyncio.sleep(0.05)
            assert log == ["+only"]
            assert (await lease_owners(redis, role, ["only"]))["only"] == standby.owner
    finally:
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        await redis.aclose()


async def test_slow_work_does_not_hold_up_the_renewals(redis_url: str) -> None:
    """Starting one lease's work and stopping another's take longer than the TTL: the lease held
    meanwhile is renewed all along (its validity never runs out), nothing is lost."""
    role = f"test-{uuid.uuid4().hex[:8]}"
    redis = aioredis.Redis.from_url(redis_url)
    wanted = ["x"]
    events: list[str] = []

    x_taken = asyncio.Event()

    async def acquired(name: str) -> None:
        events.append(f"+{name}")
        x_taken.set()
        if name == "y":
            await asyncio.sleep(2.5)

    async def lost(name: str) -> None:
        events.append(f"-{name}")
        await asyncio.sleep(2.5)

    group = LeaseGroup(redis, role, on_acquired=acquired, on_lost=lost, ttl_s=1.0)

    async def names() -> list[str]:
        return list(wanted)

    runner = asyncio.create_task(group.run(names))
    try:
        await asyncio.wait_for(x_taken.wait(), 10)
        x_valid = group.validity("x")
        wanted.append("y")  # taking y: its start takes 2.5 s (2.5 TTLs)
        ends = time.monotonic() + 3.0
        while time.monotonic() < ends:
            assert x_valid() > time.monotonic(), "x's lease ran out while y's work started"
            await asyncio.sleep(0.05)
        assert "y" in group.held
        y_valid = group.validity("y")
        wanted.remove("x")  # giving x up: its stop takes 2.5 s
        ends = time.monotonic() + 3.0
        while time.monotonic() < ends:
            assert y_valid() > time.monotonic(), "y's lease ran out while x's work stopped"
            await asyncio.sleep(0.05)
        assert events == ["+x", "+y", "-x"] and list(group.held) == ["y"]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await redis.aclose()


async def test_a_redis_refusing_client_list_falls_back_to_the_ttl(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A user without CLIENT (an ACL that denies it): one warning each, takeovers by TTL."""
    server = RedisServer(tmp_path)
    await server.start()
    admin = aioredis.Redis.from_url(server.url)
    await admin.execute_command("ACL", "SETUSER", "leases", "on", ">pw", "~*", "&*", "+@all", "-client")
    url = server.url.replace("redis://", "redis://leases:pw@")
    redis = aioredis.Redis.from_url(url)
    log: list[str] = []
    first, standby = group(redis, "r", log, max_held=1), group(redis, "r", log, max_held=1)
    try:
        with caplog.at_level(logging.WARNING, logger="trading_helper.cluster.lease"):
            await first.step(["only"])
            await first.aclose()  # gone from Redis, but Redis will not say so
            began = time.monotonic()
            while not standby.held:
                await standby.step(["only"])
                await asyncio.sleep(0.1)
        assert time.monotonic() - began >= 0.8  # waited for the 1 s TTL
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 2 and all(
            m.startswith("r leases: CLIENT SETNAME or CLIENT LIST refused (")
            and "no permissions to run the 'client|setname' command" in m
            and m.endswith("); dead owners are noticed by TTL only")
            for m in refused
        ), refused
        assert not [r for r in caplog.records if "unreachable" in r.getMessage()]
    finally:
        await standby.release_all()
        await redis.aclose()
        await admin.aclose()
        await server.kill()
