"""Leases in Redis: exactly one process owns a shard (collectors) or a stream (writers).

A lease is a key ``th:lease:<role>:<name>`` holding its owner's id, set with NX and a TTL, renewed
(compare-and-extend, one Lua script, all of a process's leases and its member beat in one round
trip) every tenth of the TTL by a loop of its own, which the work of a lease starting or stopping
never holds up. Work runs only while the lease surely holds (:meth:`LeaseGroup.validity`: the
last renewal's send time plus 0.9 TTL), so an owner whose renewals fail, or whose loop falls
behind, stops before anyone else can take it. Each take bumps the lease's epoch (``INCR``).

A process that dies is noticed in two ways: its lease keys run out (within ``ttl`` and a step),
and, sooner, Redis sees its connections close (:mod:`.presence`; with ``watch``, looked at every
tenth of a second): a standby then deletes the lease (compare-and-delete on its exact value) and
takes it, within about 0.3 s of a SIGKILL (0.5-1 s without ``watch``).

Processes of a role announce themselves in a hash (``th:members:<role>``: owner -> last beat, ms);
each holds at most its fair share of the wanted names (``ceil(wanted / live members)``), so work
spreads over the processes that run (a member whose connections are gone counts as dead at once).
Writers also rely on the database: a stream's offset is committed under the stream's advisory
lock and a taker reads it under the same lock (storage/ticks.py), so a commit of an owner that
lost its lease is either seen by the taker or never made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from trading_helper.cluster.leasekeys import lease_key, members_key, new_owner_id
from trading_helper.cluster.presence import Presence, named_client
from trading_helper.ingest.redisconn import REDIS_FAILURES, reply_text

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
    """The leases one process holds for ``role``; :meth:`step` gives up and takes, :meth:`renew`
    keeps what is held (:meth:`run` runs both, each in its own loop).

    ``on_acquired(name)`` starts the work of a lease just taken; ``on_lost(name)`` stops it (it
    must return only once the work is stopped). A lease given up by :meth:`step` is stopped
    there; one lost in a renewal (taken over, expired) stops in a task of its own, and is not
    taken again by this process before its work has stopped."""

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
        watch: bool = False,
    ) -> None:
        #: hold at most a fair share (False: everything wanted that is free, up to ``max_held``;
        #: for processes given their names explicitly, standbys of each other)
        self.fair = fair
        #: look for dead owners every tenth of a second (:meth:`Presence.watch`), not only at each
        #: step: for roles whose takeover stalls data (writers, collectors); ~0.3 ms a look
        self.watch = watch
        self.role = role
        self.owner = owner or new_owner_id()
        self._shared = redis
        # every lease command over connections named after the owner (:mod:`.presence`)
        self.redis = named_client(redis, self.owner)
        self._presence = Presence(self.owner)
        self._probed = False
        self.ttl_s = ttl_s
        self.max_held = max_held
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.held: dict[str, Held] = {}
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        #: (name, seconds from the previous owner's last renewal to our take) per takeover seen
        self.takeovers: list[tuple[str, float]] = []
        #: work of leases lost in a renewal, stopping (not taken again until it has stopped)
        self._stopping: dict[str, asyncio.Task[None]] = {}

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl_s * 1000))

    @property
    def step_every_s(self) -> float:
        """How often :meth:`run` takes and gives up (renewals: every tenth of the TTL)."""
        return min(1.0, max(0.2, self.ttl_s / 10))

    async def _probe(self) -> None:
        """Once: where Redis refuses named connections or CLIENT LIST, the shared client is
        used and leases expire by TTL only."""
        if self._probed:
            return
        if not await self._presence.probe(self.redis, self.role):
            await self.redis.connection_pool.disconnect()
            self.redis = self._shared
            self._renew = self.redis.register_script(_RENEW)
            self._release = self.redis.register_script(_RELEASE)
        self._probed = True

    async def _live_members(self, present: set[str] | None) -> int:
        now_ms = int(time.time() * 1000)
        key = members_key(self.role)
        async with self.redis.pipeline(transaction=False) as pipe:  # reset even when cancelled
            pipe.hset(key, self.owner, now_ms)
            pipe.hgetall(key)
            _, beats = await pipe.execute()
        now = time.monotonic()
        stale = [
            k
            for k, v in beats.items()
            # as dead as its leases, or its connections are gone
            if now_ms - int(v) > self._ttl_ms or self._presence.dead(reply_text(k), present, now)
        ]
        if stale:
            await self.redis.hdel(key, *stale)
        return max(1, len(beats) - len(stale))

    async def renew(self, *, beat: bool = False) -> None:
        """Every held lease renewed in one round trip (its send time noted first); a lease that
        is not (taken over, or not renewed in time) is lost: its work stops in a task of its own."""
        for held in self._renew_failed(await self._renew_sent(beat=beat)) + self._overdue():
            self._lose(held)

    async def _renew_sent(self, *, beat: bool = False) -> list[Held]:
        """Renew everything held; the leases whose renewal was refused. With ``beat``, the same
        round trip announces this process as a member and notes the renewal time of each lease
        (:meth:`mark_alive`): one await per renewal, which a busy event loop resumes late."""
        snapshot = list(self.held.values())
        if not snapshot and not beat:
            return []
        sent = time.monotonic()  # before the renewals are sent: their TTLs start later
        # the pipeline is reset on the way out, also when a stop cancels the renewal mid-way (an
        # abandoned pipeline keeps its connection and warns when collected)
        async with self.redis.pipeline(transaction=False) as pipe:
            for held in snapshot:
                key = lease_key(self.role, held.name)
                await self._renew(keys=[key], args=[held.token, self._ttl_ms], client=pipe)
            if beat:
                pipe.hset(members_key(self.role), self.owner, int(time.time() * 1000))
                self._stamp(pipe, [held.name for held in snapshot])
            try:
                replies = (await pipe.execute())[: len(snapshot)]
            except REDIS_FAILURES as exc:
                log.warning("%s leases: renewal failed (%s)", self.role, exc)
                return []
        refused = []
        for held, ok in zip(snapshot, replies, strict=True):
            if ok:
                held.renewed_at = sent
            else:
                refused.append(held)
        return refused

    def _renew_failed(self, refused: list[Held]) -> list[Held]:
        for held in refused:
            if self.held.get(held.name) is held:
                log.warning(
                    "%s lease %s was lost (taken over or expired): stopping its work", self.role, held.name
                )
        return refused

    def _overdue(self) -> list[Held]:
        """Held leases not renewed in time (Redis away, or this loop fell behind): given up
        before anyone can take them."""
        late = [h for h in self.held.values() if time.monotonic() >= self._until(h)]
        for held in late:
            log.warning("%s lease %s not renewed in time: stopping its work", self.role, held.name)
        return late

    def _lose(self, held: Held) -> None:
        """``held`` is no longer ours: out of :attr:`held` now (its validity ends), its work
        stopped in a task (:attr:`_stopping` until done)."""
        if self.held.get(held.name) is not held:
            return  # given up already
        del self.held[held.name]
        previous = self._stopping.get(held.name)

        async def stop() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await self.on_lost(held.name)
            except Exception:
                log.exception("%s lease %s: stopping its work failed", self.role, held.name)

        task = asyncio.create_task(stop(), name=f"{self.role} lease {held.name} lost")
        self._stopping[held.name] = task

        def done(_: asyncio.Task[None]) -> None:
            if self._stopping.get(held.name) is task:
                del self._stopping[held.name]

        task.add_done_callback(done)

    async def settle(self) -> None:
        """Wait until the work of every lease lost in a renewal has stopped."""
        while self._stopping:
            await asyncio.gather(*self._stopping.values(), return_exceptions=True)

    async def step(self, wanted: Sequence[str], *, renew: bool = True) -> None:
        """Give up what is not wanted (or beyond the share), take free names and those of dead
        owners; with ``renew``, renew what is held first (and wait for lost leases' work to stop)."""
        try:
            await self._probe()
            if renew:
                await self.renew()
                await self.settle()
            present = await self._presence.present(self.redis)
            members = await self._live_members(present)
            share = math.ceil(len(wanted) / members) if self.fair else len(wanted)
            if self.max_held is not None:
                share = min(share, self.max_held)
            kept = [n for n in self.held if n in wanted]
            for name in [n for n in self.held if n not in wanted] + kept[share:]:
                if name in self.held:
                    await self._drop(name, release=True)
            free = [n for n in wanted if n not in self.held and n not in self._stopping]
            if len(self.held) < share and free:
                values = await self.redis.mget([lease_key(self.role, n) for n in free])
                now = time.monotonic()
                for name, value in zip(free, values, strict=True):
                    if len(self.held) >= share:
                        break
                    if value is not None:
                        holder = reply_text(value).partition("#")[0]
                        if not self._presence.dead(holder, present, now):
                            continue
                        log.warning(
                            "%s lease %s: its owner %s has no connection to Redis any more; taking it",
                            self.role,
                            name,
                            holder,
                        )
                        await self._release(keys=[lease_key(self.role, name)], args=[value])
                    await self._try_take(name)
        except REDIS_FAILURES as exc:
            log.warning("%s leases: Redis unreachable (%s)", self.role, exc)
        if renew:
            for held in self._overdue():
                self._lose(held)
            await self.settle()

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
        async with self.redis.pipeline(transaction=False) as pipe:
            self._stamp(pipe, list(self.held))
            await pipe.execute()

    def _stamp(self, pipe: Pipeline, names: Sequence[str]) -> None:
        stamp = f"{time.time():.3f}"
        for name in names:
            pipe.set(f"{lease_key(self.role, name)}:renewed", stamp, px=self._ttl_ms * 20)

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

    async def _keep_renewed(self) -> None:
        """Renew (with the member beat) every tenth of the TTL: a lease stays valid for 0.9 TTL
        after a renewal was sent, so even a loop that resumes each await a second late keeps it."""
        period = max(0.1, self.ttl_s / 10)
        while True:
            began = time.monotonic()
            await self.renew(beat=True)
            await asyncio.sleep(max(0.05, began + period - time.monotonic()))

    async def run(self, wanted: Callable[[], Awaitable[Sequence[str]]]) -> None:
        """Renewals every tenth of the TTL in their own task; :meth:`step` every
        :attr:`step_every_s` with ``wanted()`` asked each time, and at once when the presence
        watcher sees an owner dead; until cancelled (then everything held is given up and
        released)."""
        renewals = asyncio.create_task(self._keep_renewed(), name=f"{self.role} lease renewals")
        wake = asyncio.Event()  # a dead owner seen (:meth:`Presence.watch`): step now
        tasks = [renewals]
        try:
            while True:
                for task in tasks:
                    if task.done():
                        task.result()  # its error, raised here (the watcher ends where CLIENT is refused)
                try:
                    names = await wanted()
                except REDIS_FAILURES as exc:
                    log.warning("%s: cannot read what to hold (%s)", self.role, exc)
                    names = list(self.held)
                await self.step(names, renew=False)
                if self.watch and len(tasks) == 1 and self._probed:  # once the probe chose the client
                    tasks.append(asyncio.create_task(self._presence.watch(lambda: self.redis, wake.set)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.step_every_s)
                wake.clear()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.release_all()

    async def release_all(self) -> None:
        await asyncio.shield(self.settle())
        for name in list(self.held):
            await asyncio.shield(self._drop(name, release=True))
        try:
            await self.redis.hdel(members_key(self.role), self.owner)
        except REDIS_FAILURES:
            pass
        await self.aclose()

    async def aclose(self) -> None:
        """Close the group's own connections (without releasing anything: as if this process
        died; a later call opens them again)."""
        await self.redis.connection_pool.disconnect()
