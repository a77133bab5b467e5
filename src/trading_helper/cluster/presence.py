"""Which lease owners are alive, as Redis itself sees it: their connections.

Every lease command of a :class:`~.lease.LeaseGroup` goes over connections named after its owner
(``CLIENT SETNAME``, :func:`named_client`). While the process lives they stay open; when it dies
(a SIGKILL included) the kernel closes them and Redis drops them from ``CLIENT LIST`` at once. An
owner missing from two looks at least :data:`PRESENCE_GRACE_S` apart is dead
(:meth:`Presence.dead`): its lease may be taken without waiting for its TTL. For writers and
collectors, :meth:`Presence.watch` looks every :data:`PRESENCE_POLL_S` and wakes the lease group's
step once an owner has been missing that long, so a takeover does not wait for the step's own,
slower, cadence (a writer's streams stall until it: at 0.5 s steps, two looks made it 0.5-1 s
after a kill). The grace only keeps a reconnecting owner from being taken over for nothing: a
live process's lease connections stay open whatever its event loop does, and a false take is safe
(see below). An owner alive but
cut off from Redis that long counts as dead too, which is safe as an expired lease is (the fences
refuse its appends and reads, its own renewals fail). Where Redis refuses ``CLIENT`` (an ACL
without it), :meth:`Presence.probe` says so once and leases expire by their TTL only.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from trading_helper.ingest.redisconn import REDIS_FAILURES

log = logging.getLogger(__name__)

#: a lease's owner missing from CLIENT LIST this long (two looks) is dead: its lease is taken
PRESENCE_GRACE_S = 0.2
#: how often :meth:`Presence.watch` looks (one CLIENT LIST: 0.27 ms with 80 clients, measured beside a bench)
PRESENCE_POLL_S = 0.1
#: an owner missing longer is forgotten (asked about again, it waits out the grace once more)
_FORGET_S = 600.0


def presence_name(owner: str) -> str:
    """The client name of an owner's lease connections (no spaces: CLIENT SETNAME refuses them)."""
    return "th-lease:" + owner.replace(" ", "_")


#: an owner's name in a CLIENT LIST line: fields are separated by spaces and every line starts with
#: ``id=``, so ``name=`` always follows a space (names have none). The pattern starts with its
#: literal text so that re scans for it: ``(?:^| )name=...`` tried a match at every character,
#: 0.4 ms of CPU a look at 80 clients, ten looks a second in every collector and writer.
_NAMES = re.compile(rf" name={re.escape(presence_name(''))}(\S+)")


def named_client(redis: aioredis.Redis, owner: str) -> aioredis.Redis:
    """A client on a pool of its own, like ``redis``'s, whose connections carry ``owner``'s name."""
    pool = redis.connection_pool
    named = type(pool)(
        connection_class=pool.connection_class,
        **{**pool.connection_kwargs, "client_name": presence_name(owner)},
    )
    return aioredis.Redis(connection_pool=named)


class Presence:
    """Looks at CLIENT LIST for ``owner``'s group (``None`` absent-map: CLIENT refused)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        #: owner -> monotonic time it was first seen without a connection (None: CLIENT refused)
        self._absent: dict[str, float] | None = {}
        #: owners present at the last look of :meth:`watch`; those it reported dead
        self._seen: set[str] = set()
        self._reported: set[str] = set()

    async def probe(self, named: aioredis.Redis, role: str) -> bool:
        """Named connections and CLIENT LIST work (False, with one warning, where refused)."""
        try:
            await named.client_list(_type="normal")  # the connect sends CLIENT SETNAME
        except ResponseError as exc:
            log.warning(
                "%s leases: CLIENT SETNAME or CLIENT LIST refused (%s); dead owners are noticed by TTL only",
                role,
                exc,
            )
            self._absent = None
            return False
        return True

    async def present(self, redis: aioredis.Redis) -> set[str] | None:
        """Owners with a lease connection open now (None: CLIENT LIST refused)."""
        if self._absent is None:
            return None
        # the reply unparsed, its names picked by one regex: redis-py's parser splits every field of
        # every client in Python, ~0.8 ms for 80 clients, which the watcher paid ten times a second
        raw = await redis.execute_command("CLIENT", "LIST", "TYPE", "normal")  # type: ignore[no-untyped-call,unused-ignore]
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return set(_NAMES.findall(text))

    def dead(self, owner: str, present: set[str] | None, now: float) -> bool:
        """True once ``owner`` was missing from two looks at least PRESENCE_GRACE_S apart."""
        if present is None or self._absent is None or owner == self.owner:
            return False
        if owner in present:
            self._absent.pop(owner, None)
            return False
        return now - self._absent.setdefault(owner, now) >= PRESENCE_GRACE_S

    def look(self, present: set[str], now: float) -> bool:
        """Note the owners gone since the last look; True when one of them has now been missing
        for the grace (once per owner: the step it wakes takes its leases)."""
        if self._absent is None:
            return False
        for owner in self._seen - present - {self.owner}:
            self._absent.setdefault(owner, now)
        for owner in present:
            self._absent.pop(owner, None)
            self._reported.discard(owner)
        self._seen = present
        for owner in [o for o, t in self._absent.items() if now - t >= _FORGET_S]:
            del self._absent[owner]
            self._reported.discard(owner)
        due = {o for o, t in self._absent.items() if now - t >= PRESENCE_GRACE_S} - self._reported
        self._reported |= due
        return bool(due)

    async def watch(self, client: Callable[[], aioredis.Redis], wake: Callable[[], None]) -> None:
        """Look every :data:`PRESENCE_POLL_S` (on ``client()``, the group's connections) and call
        ``wake()`` once an owner is dead; returns at once where CLIENT LIST is refused."""
        while self._absent is not None:
            await asyncio.sleep(PRESENCE_POLL_S)
            try:
                present = await self.present(client())
            except REDIS_FAILURES:
                continue  # the step and the renewals report Redis being away
            if present is not None and self.look(present, time.monotonic()):
                wake()
