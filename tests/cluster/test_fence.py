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


async def test_a_writer_reads_only_under_the_lease(redis_url: str) -> None:
    plain = aioredis.Redis.from_url(redis_url)
    stream, lease = f"th:test:fence:{uuid.uuid4().hex[:8]}", f"th:test:lease:{uuid.uuid4().hex[:8]}"
    fenced = FencedRedis(lease, "me#1", connection_pool=plain.connection_pool)
    try:
        await plain.xgroup_create(stream, "g", id="0", mkstream=True)
        await plain.xadd(stream, {b"u": b"one"}, id="5-1")
        await plain.set(lease, "me#1", px=5000)
        assert await fenced.xreadgroup("g", "writer", {stream: ">"}, count=10, block=50) == [
            [stream.encode(), [(b"5-1", {b"u": b"one"})]]
        ]  # as redis-py parses a plain XREADGROUP
        assert await fenced.xreadgroup("g", "writer", {stream: ">"}, count=10, block=50) == []  # waited
        assert (await fenced.xreadgroup("g", "writer", {stream: "0"}, count=10))[0][1][0][0] == b"5-1"
        await plain.set(lease, "me#2", px=5000)  # this process took it again: another lease
        await plain.xadd(stream, {b"u": b"two"}, id="5-2")
        with pytest.raises(ResponseError, match="FENCED"):
            await fenced.xreadgroup("g", "writer", {stream: ">"}, count=10)
        assert (await plain.xinfo_groups(stream))[0]["lag"] == 1  # the entry is still there for the owner
    finally:
        await plain.delete(stream, lease)
        await plain.aclose()
