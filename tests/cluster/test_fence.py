"""Fencing in Redis (cluster/fence.py): a shard's stream takes the receiver's entries only while
its lease key holds the receiver's owner id; a refused id still reads as "equal or smaller"."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from trading_helper.cluster.fence import FencedRedis


async def test_appends_only_under_the_lease(redis_url: str) -> None:
    plain = aioredis.Redis.from_url(redis_url)
    stream, lease = f"th:test:fence:{uuid.uuid4().hex[:8]}", f"th:test:lease:{uuid.uuid4().hex[:8]}"
    fenced = FencedRedis(lease, "me", connection_pool=plain.connection_pool)
    try:
        await plain.set(lease, "me", px=5000)
        pipe = fenced.pipeline(transaction=False)
        pipe.xadd(stream, {b"u": b"one"}, id="5-1")
        pipe.xadd(stream, {b"u": b"two"}, id="5-2")
        assert await pipe.execute() == [b"5-1", b"5-2"]
        with pytest.raises(ResponseError, match="equal or smaller than the target stream top item"):
            await fenced.xadd(stream, {b"u": b"again"}, id="5-2")  # what the receiver's settle reads
        await plain.set(lease, "someone-else", px=5000)  # taken over
        pipe = fenced.pipeline(transaction=False)
        pipe.xadd(stream, {b"u": b"late"}, id="6-0")
        (reply,) = await pipe.execute(raise_on_error=False)
        assert isinstance(reply, ResponseError) and "FENCED" in str(reply)
        await plain.delete(lease)  # expired: nobody holds it, nobody appends
        with pytest.raises(ResponseError, match="FENCED"):
            await fenced.xadd(stream, {b"u": b"later"}, id="7-0")
        assert [e[1] for e in await plain.xrange(stream)] == [{b"u": b"one"}, {b"u": b"two"}]
    finally:
        await plain.delete(stream, lease)
        await plain.aclose()
