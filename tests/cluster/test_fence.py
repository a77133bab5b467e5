"""Fencing in Redis (cluster/fence.py): a shard's stream takes the receiver's entries only while
its lease key holds the receiver's owner id; a refused id still reads as "equal or smaller"."""

from __future__ import annotations

import asyncio
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


async def test_a_waiting_read_wakes_at_the_next_append_not_at_the_end_of_its_block(redis_url: str) -> None:
    plain = aioredis.Redis.from_url(redis_url)
    stream, lease = f"th:test:fence:{uuid.uuid4().hex[:8]}", f"th:test:lease:{uuid.uuid4().hex[:8]}"
    fenced = FencedRedis(lease, "me", connection_pool=plain.connection_pool)
    try:
        await plain.xgroup_create(stream, "g", id="0", mkstream=True)
        await plain.set(lease, "me", px=30_000)
        # entries delivered before (to a dead owner, say) are behind the group's last delivered
        # id: they do not wake the wait, only a new one does
        await plain.xadd(stream, {b"u": b"old"}, id="5-1")
        await plain.xreadgroup("g", "dead", {stream: ">"}, count=10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await fenced.xreadgroup("g", "writer", {stream: ">"}, count=10, block=300) == []
        assert loop.time() - started >= 0.28  # nothing new: the whole block
        appender = loop.call_later(
            0.2, lambda: asyncio.ensure_future(plain.xadd(stream, {b"u": b"new"}, id="6-1"))
        )
        started = loop.time()
        assert await fenced.xreadgroup("g", "writer", {stream: ">"}, count=10, block=5_000) == []
        woke = loop.time() - started
        assert 0.15 <= woke < 2.0, woke  # woken by the append, long before the 5 s block
        read = await fenced.xreadgroup("g", "writer", {stream: ">"}, count=10, block=5_000)
        assert read == [[stream.encode(), [(b"6-1", {b"u": b"new"})]]]
        appender.cancel()
    finally:
        await plain.delete(stream, lease)
        await plain.aclose()
