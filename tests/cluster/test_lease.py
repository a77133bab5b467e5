"""Leases on a real Redis (cluster/lease.py): one owner per name, fair shares, release, takeover."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis.asyncio as aioredis

from trading_helper.cluster.lease import LeaseGroup, lease_owners


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
        assert name == "only" and 1.0 <= seconds < 2.5
    finally:
        await standby.release_all()
        await redis.aclose()
