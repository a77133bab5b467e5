"""Leases in Redis: exactly one process owns a shard (collectors) or a stream (writers).

A lease is a key ``th:lease:<role>:<name>`` holding its owner's id, set with NX and a TTL, renewed
(compare-and-extend, one Lua script, all of a process's leases in one round trip) every fifth of
the TTL. Work runs only while the lease surely holds (:meth:`LeaseGroup.validity`: the last
renewal's send time plus 0.9 TTL), so an owner whose renewals fail, or whose loop falls behind,
stops before anyone else can take it; a process that dies stops renewing and a standby takes the
lease once the TTL runs out, within ``ttl + ttl / 5`` (its next try). Each
take bumps the lease's epoch (``INCR``), so the status can tell takeovers apart.

Processes of a role announce themselves in a hash (``th:members:<role>``: owner -> last beat, ms);
each holds at most its fair share of the wanted names (``ceil(wanted / live members)``), so work
spreads over the processes that run, a newcomer gets some and a death raises everyone's share.
Writers additionally rely on the database, not on the lease alone: a stream's offset is committed
under the stream's advisory lock and a taker reads it under the same lock (storage/ticks.py), so a
commit of an owner that lost its lease is either seen by the taker or never made.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from trading_helper.ingest.redisconn import REDIS_FAILURES

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 5.0
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_key(role: str, name: str) -> str:
    return f"th:lease:{role}:{name}"


def members_key(role: str) -> str:
    return f"th:members:{role}"


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def lease_owners(redis: aioredis.Redis, role: str, names: Sequence[str]) -> dict[str, str | None]:
    """Who holds each lease now (the owner id, None: nobody)."""
    if not names:
        return {}
    values = await redis.mget([lease_key(role, n) for n in names])
    texts = [v.decode() if isinstance(v, bytes) else v for v in values]
    return {n: t.partition("#")[0] if t else None for n, t in zip(names, texts, strict=True)}


@dataclass
class Held:
    name: str
    epoch: int
    #: monotonic time of the last successful take or renewal
    renewed_at: float
    #: the lease key's value: owner id and this take
    token: str = ""
    acquired_at: float = field(default_factory=time.time)


class LeaseGroup:
    """The leases one process holds for ``role``; :meth:`step` renews, gives up and takes.

    ``on_acquired(name)`` starts the work of a lease just taken; ``on_lost(name)`` stops it (it
    must return only once the work is stopped); both run inside :meth:`step`."""

    def __init__(
        self,
        redis: aioredis.Redis,
        role: str,
        *,
        on_acquired: Callable[[str], Awaitable[None]],
        on_lost: Callable[[str], Awaitable[None]],
        ttl_s: float = DEFAULT_TTL_S,
        owner: str | None = None,
        max_held: int | None = None,
        fair: bool = True,
    ) -> None:
        self.redis = redis
        #: hold at most a fair share (False: everything wanted that is free, up to ``max_held``;
        #: for processes given their names explicitly, standbys of each other)
        self.fair = fair
        self.role = role
        self.owner = owner or new_owner_id()
        self.ttl_s = ttl_s
        self.max_held = max_held
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.held: dict[str, Held] = {}
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        #: (name, seconds from the previous owner's last renewal to our take) per takeover seen
        self.takeovers: list[tuple[str, float]] = []

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl_s * 1000))

    async def _live_members(self) -> int:
        now_ms = int(time.time() * 1000)
        key = members_key(self.role)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, self.owner, now_ms)
        pipe.hgetall(key)
        _, beats = await pipe.execute()
        stale = [k for k, v in beats.items() if now_ms - int(v) > self._ttl_ms]  # as dead as its leases
        if stale:
            await self.redis.hdel(key, *stale)
        return max(1, len(beats) - len(stale))

    async def _renew_all(self) -> None:
        """Every held lease renewed in one round trip (its send time noted first)."""
        if not self.held:
            return
        names = list(self.held)
        sent = time.monotonic()  # before the renewals are sent: their TTLs start later
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            token = self.held[name].token
            await self._renew(keys=[lease_key(self.role, name)], args=[token, self._ttl_ms], client=pipe)
        for name, ok in zip(names, await pipe.execute(), strict=True):
            held = self.held.get(name)
            if held is None:
                continue
            if ok:
                held.renewed_at = sent
            else:
                log.warning(
                    "%s lease %s was lost (taken over or expired): stopping its work", self.role, name
                )
                await self._drop(name, release=False)

    async def step(self, wanted: Sequence[str]) -> None:
        """Renew what is held, give up what is not wanted (or beyond the share), take free names."""
        try:
            await self._renew_all()
            members = await self._live_members()
            share = math.ceil(len(wanted) / members) if self.fair else len(wanted)
            if self.max_held is not None:
                share = min(share, self.max_held)
            for name in [n for n in self.held if n not in wanted] + list(self.held)[share:]:
                if name in self.held:
                    await self._drop(name, release=True)
            for name in wanted:
                if len(self.held) >= share:
                    break
                if name in self.held:
                    continue
                await self._try_take(name)
        except REDIS_FAILURES as exc:
            log.warning("%s leases: Redis unreachable (%s)", self.role, exc)
        # not renewed in time (Redis away, or this loop fell behind): give the work up before
        # anyone can take it
        for name, held in list(self.held.items()):
            if time.monotonic() >= self._until(held):
                log.warning("%s lease %s not renewed in time: stopping its work", self.role, name)
                await self._drop(name, release=False)

    def valid_until(self, name: str) -> float:
        """Monotonic time before which this process surely still holds ``name`` (0: not held):
        the key's TTL started after our last take or renewal was sent, so nobody can take it
        before then; a tenth is kept back for clock rates."""
        held = self.held.get(name)
        return self._until(held) if held is not None else 0.0

    def token(self, name: str) -> str:
        """The value of ``name``'s lease key while this process holds it (owner id and take)."""
        return self.held[name].token

    def _until(self, held: Held) -> float:
        return held.renewed_at + self.ttl_s * 0.9

    def validity(self, name: str) -> Callable[[], float]:
        """:meth:`valid_until` of the lease held now: 0 for good once it is given up, even when
        this process takes ``name`` again later (that is another lease, with other work)."""
        held = self.held[name]
        return lambda: self._until(held) if self.held.get(name) is held else 0.0

    async def _try_take(self, name: str) -> None:
        key = lease_key(self.role, name)
        sent = time.monotonic()
        token = f"{self.owner}#{uuid.uuid4().hex[:6]}"  # this take's: a later take is another lease
        if not await self.redis.set(key, token, nx=True, px=self._ttl_ms):
            return
        epoch = int(await self.redis.incr(f"{key}:epoch"))
        last = await self.redis.getset(f"{key}:renewed", "")
        self.held[name] = Held(name, epoch, sent, token)
        log.info("%s lease %s taken (epoch %d)", self.role, name, epoch)
        if last:
            self.takeovers.append((name, time.time() - float(last)))
        try:
            await self.on_acquired(name)
        except Exception:
            await self._drop(name, release=True)
            raise

    async def mark_alive(self) -> None:
        """Note when each held lease was last renewed (a taker measures its takeover from it)."""
        stamp = f"{time.time():.3f}"
        pipe = self.redis.pipeline(transaction=False)
        for name in self.held:
            pipe.set(f"{lease_key(self.role, name)}:renewed", stamp, px=self._ttl_ms * 20)
        await pipe.execute()

    async def give_up(self, name: str) -> None:
        """Stop the work of ``name`` and release it (a later step may take it again)."""
        if name in self.held:
            await self._drop(name, release=True)

    async def _drop(self, name: str, *, release: bool) -> None:
        held = self.held.pop(name, None)
        try:
            await self.on_lost(name)
        finally:
            if release and held is not None:
                try:
                    await self._release(keys=[lease_key(self.role, name)], args=[held.token])
                    await self.redis.delete(f"{lease_key(self.role, name)}:renewed")
                except REDIS_FAILURES:
                    pass  # it expires by itself

    async def run(self, wanted: Callable[[], Awaitable[Sequence[str]]]) -> None:
        """:meth:`step` every fifth of the TTL, with ``wanted()`` asked each time, until cancelled
        (then everything held is given up and released)."""
        try:
            while True:
                try:
                    names = await wanted()
                except REDIS_FAILURES as exc:
                    log.warning("%s: cannot read what to hold (%s)", self.role, exc)
                    names = list(self.held)
                await self.step(names)
                try:
                    await self.mark_alive()
                except REDIS_FAILURES:
                    pass
                await asyncio.sleep(max(0.2, self.ttl_s / 5))
        finally:
            await self.release_all()

    async def release_all(self) -> None:
        for name in list(self.held):
            await asyncio.shield(self._drop(name, release=True))
        try:
            await self.redis.hdel(members_key(self.role), self.owner)
        except REDIS_FAILURES:
            pass
