"""Fencing in Redis itself: a shard's stream takes entries only from the holder of its lease.

The collector's local check (:class:`~.collector.LeasedSink`) stops handing frames on once its
lease may have run out by its own clock; but Redis expires keys by the wall clock, which a
machine may step, so an owner can still believe it holds a lease another process was given.
Here every XADD of the shard's receiver is a script that appends only while the lease key holds
this process's id (one atomic step in the Redis that holds both): an old owner's late appends are
refused (``FENCED``), never interleaved with the new owner's copies of the same ticks. The
receiver keeps a refused frame as unsent; the lease machinery stops the shard."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

_FENCED_XADD = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('FENCED the lease of this stream is held by another process')
end
return redis.call('XADD', KEYS[1], ARGV[2], unpack(ARGV, 3))
"""
#: the same for a writer's reads. Scripts cannot block: a read of new entries (">") that finds
#: none returns the group's last delivered id instead, and the caller waits for an entry after it
#: with a plain XREAD BLOCK (no side effect, so no fence needed), then reads here again
_FENCED_XREADGROUP = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('FENCED the lease of this stream is held by another process')
end
local r = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4], 'STREAMS', KEYS[1], ARGV[5])
if r or ARGV[5] ~= '>' then
  return r
end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  if name == ARGV[2] then
    return last
  end
end
return false
"""


def _flat(fields: Any) -> list[Any]:
    return [x for pair in fields.items() for x in pair]


class _FencedPipeline(Pipeline):
    lease_key: str
    owner: str

    def xadd(self, name: Any, fields: Any, id: Any = "*", *args: Any, **kwargs: Any) -> Any:
        return self.eval(_FENCED_XADD, 2, name, self.lease_key, self.owner, id, *_flat(fields))


class FencedRedis(aioredis.Redis):
    """The process's Redis (its connection pool), appending to and reading its stream only while
    ``lease_key`` holds ``owner`` (the lease take's token)."""

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

    async def xreadgroup(
        self,
        groupname: Any,
        consumername: Any,
        streams: Any,
        count: int | None = None,
        block: int | None = None,
        noack: bool = False,
        claim_min_idle_time: int | None = None,
        max_count: int | None = None,
        max_size: int | None = None,
    ) -> Any:
        """XREADGROUP of one stream, only while the lease is ours: another owner's reads can
        never interleave with ours (the offset is a high-water mark). With ``block``, a read that
        finds nothing new waits up to that long for the next entry and returns empty (the writer
        reads again): a tick is read as soon as it is appended, not at the next poll."""
        ((name, start),) = streams.items()
        raw = await self.eval(
            _FENCED_XREADGROUP,
            2,
            name,
            self.lease_key,
            self.owner,
            groupname,
            consumername,
            count or 1000,
            start,
        )
        if isinstance(raw, (bytes, str)):  # nothing new: ``raw`` is the group's last delivered id
            if block:
                await super().xread({name: raw}, count=1, block=block)
            return []
        if not raw or not raw[0][1]:
            if block:
                await asyncio.sleep(block / 1000)
            return []
        stream, entries = raw[0]
        parsed = [(eid, dict(zip(f[::2], f[1::2], strict=True)) if f else None) for eid, f in entries]
        return [[stream, parsed]]
