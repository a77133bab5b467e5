"""Fencing in Redis itself: a shard's stream takes entries only from the holder of its lease.

The collector's local check (:class:`~.collector.LeasedSink`) stops handing frames on once its
lease may have run out by its own clock; but Redis expires keys by the wall clock, which a
machine may step, so an owner can still believe it holds a lease another process was given.
Here every XADD of the shard's receiver is a script that appends only while the lease key holds
this process's id (one atomic step in the Redis that holds both): an old owner's late appends are
refused (``FENCED``), never interleaved with the new owner's copies of the same ticks. The
receiver keeps a refused frame as unsent; the lease machinery stops the shard."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

_FENCED_XADD = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('FENCED the lease of this stream is held by another process')
end
return redis.call('XADD', KEYS[1], ARGV[2], unpack(ARGV, 3))
"""


def _flat(fields: Any) -> list[Any]:
    return [x for pair in fields.items() for x in pair]


class _FencedPipeline(Pipeline):
    lease_key: str
    owner: str

    def xadd(self, name: Any, fields: Any, id: Any = "*", *args: Any, **kwargs: Any) -> Any:
        return self.eval(_FENCED_XADD, 2, name, self.lease_key, self.owner, id, *_flat(fields))


class FencedRedis(aioredis.Redis):
    """The process's Redis (its connection pool), appending to streams only under ``lease_key``."""

    def __init__(self, lease_key: str, owner: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lease_key = lease_key
        self.owner = owner

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = _FencedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.lease_key, pipe.owner = self.lease_key, self.owner
        return pipe

    async def xadd(self, name: Any, fields: Any, id: Any = "*", *args: Any, **kwargs: Any) -> Any:
        return await self.eval(_FENCED_XADD, 2, name, self.lease_key, self.owner, id, *_flat(fields))
