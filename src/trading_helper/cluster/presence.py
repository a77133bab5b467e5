"""Which lease owners are alive, as Redis itself sees it: their connections.

Every lease command of a :class:`~.lease.LeaseGroup` goes over connections named after its owner
(``CLIENT SETNAME``, :func:`named_client`). While the process lives they stay open; when it dies
(a SIGKILL included) the kernel closes them and Redis drops them from ``CLIENT LIST`` at once. An
owner missing from two looks at least :data:`PRESENCE_GRACE_S` apart is dead
(:meth:`Presence.dead`): its lease may be taken without waiting for its TTL. An owner alive but
cut off from Redis that long counts as dead too, which is safe as an expired lease is (the fences
refuse its appends and reads, its own renewals fail). Where Redis refuses ``CLIENT`` (an ACL
without it), :meth:`Presence.probe` says so once and leases expire by their TTL only.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

log = logging.getLogger(__name__)

#: a lease's owner missing from CLIENT LIST this long (two looks) is dead: its lease is taken
PRESENCE_GRACE_S = 0.5


def presence_name(owner: str) -> str:
    """The client name of an owner's lease connections (no spaces: CLIENT SETNAME refuses them)."""
    return "th-lease:" + owner.replace(" ", "_")


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
        clients = await redis.client_list(_type="normal")
        prefix = presence_name("")
        return {c["name"][len(prefix) :] for c in clients if c.get("name", "").startswith(prefix)}

    def dead(self, owner: str, present: set[str] | None, now: float) -> bool:
        """True once ``owner`` was missing from two looks at least PRESENCE_GRACE_S apart."""
        if present is None or self._absent is None or owner == self.owner:
            return False
        if owner in present:
            self._absent.pop(owner, None)
            return False
        return now - self._absent.setdefault(owner, now) >= PRESENCE_GRACE_S
