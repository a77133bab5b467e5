"""Faults that must lose nothing and double nothing: a killed writer, a crash between commit and
acknowledgement, PostgreSQL unreachable for seconds, Redis restarted (AOF) during a run."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from tests.faults.proxy import FaultProxy
from tests.ingest.direct_writer import DirectWriter
from tests.ingest.helpers import numbered_frames, redis_stream, sim_feed, stored_sequence_numbers
from tests.services import _free_port
from tests.storage.helpers import reset_market_data
from trading_helper.ingest import keys, metrics
from trading_helper.ingest.receiver import TickReceiver
from trading_helper.ingest.redisconn import redis_client
from trading_helper.ingest.stream import decode_entry
from trading_helper.ingest.writer import StreamWriter
from trading_helper.storage.ticks import StreamOffset


async def _wait_for(predicate: object, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _fill(db_pool: asyncpg.Pool, redis: aioredis.Redis, stream: str, frames: int, ticks: int) -> None:
    """Fresh market data, and ``frames`` numbered frames of ``ticks`` ticks in the stream."""
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool)
    receiver = TickReceiver(redis, stream=stream, max_entries=100_000, local_max_frames=100)
    for frame in numbered_frames(feed, frames, ticks):
        await receiver.on_ticks(frame)
    await receiver.flush()  # frames handed in a burst go out together; the last may still wait


async def test_writer_killed_mid_run_then_restarted(
    db_pool: asyncpg.Pool, db_dsn: str, redis_url: str
) -> None:
    async with redis_stream(redis_url) as (redis, stream):
        await _fill(db_pool, redis, stream, 300, 100)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.ingest.writer_proc", db_dsn, redis_url, stream
        )
        try:

            async def some_written() -> bool:
                return (await stored_sequence_numbers(db_pool))[0] >= 3000

            await _wait_for(some_written)
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        written_before_restart, _ = await stored_sequence_numbers(db_pool)
        assert written_before_restart < 30_000, "the writer finished before it could be killed"
        await StreamWriter(redis, db_pool, stream=stream).run(stop_when_idle=True)
    assert await stored_sequence_numbers(db_pool) == (30_000, 30_000)


async def test_crash_between_commit_and_acknowledgement_writes_nothing_twice(
    db_pool: asyncpg.Pool, redis_url: str
) -> None:
    async with redis_stream(redis_url) as (redis, stream):
        await _fill(db_pool, redis, stream, 20, 50)
        # a writer reads 8 entries and commits them with their offset, then dies before XACK
        await redis.xgroup_create(stream, keys.WRITER_GROUP, id="0")
        reply = await redis.xreadgroup(keys.WRITER_GROUP, "writer", {stream: ">"}, count=8)
        entries = [decode_entry(i, f) for i, f in reply[0][1]]
        tick_writer = await DirectWriter.open(db_pool)
        await tick_writer.write_records(
            [r for e in entries for r in e.items],  # type: ignore[misc]
            offset=StreamOffset(stream, entries[-1].entry_id),
        )
        assert await stored_sequence_numbers(db_pool) == (400, 400)
        writer = StreamWriter(redis, db_pool, stream=stream)
        await writer.run(stop_when_idle=True)
        pending = await redis.xpending(stream, keys.WRITER_GROUP)
    assert writer.stats.skipped_committed == 8
    assert await stored_sequence_numbers(db_pool) == (1000, 1000)
    assert pending["pending"] == 0


async def test_a_writer_starting_while_a_dead_writers_commit_still_finishes_waits_for_it(
    db_pool: asyncpg.Pool, redis_url: str
) -> None:
    """A SIGKILLed writer's backend can still be running its COMMIT when a fresh writer starts:
    the fresh one must read the offset that commit writes, not the one before it (run 8 of 20 of
    the fault loop stored 30,300 rows for 30,000 ticks that way)."""
    async with redis_stream(redis_url) as (redis, stream):
        await _fill(db_pool, redis, stream, 20, 50)
        await redis.xgroup_create(stream, keys.WRITER_GROUP, id="0")
        reply = await redis.xreadgroup(keys.WRITER_GROUP, "writer", {stream: ">"}, count=8)
        entries = [decode_entry(i, f) for i, f in reply[0][1]]
        dead = await DirectWriter.open(db_pool)
        batch = await dead.prepare_batch([r for e in entries for r in e.items])  # type: ignore[misc]
        earlier = await db_pool.acquire()
        try:
            tx = earlier.transaction()
            await tx.start()  # the dead writer's transaction: rows and offset sent, COMMIT not yet done
            await dead.store._commit_once(
                earlier, batch.batch.write, StreamOffset(stream, entries[-1].entry_id)
            )
            writer = StreamWriter(redis, db_pool, stream=stream)
            run = asyncio.create_task(writer.run(stop_when_idle=True))
            await asyncio.sleep(0.5)
            assert not run.done() and await stored_sequence_numbers(db_pool) == (0, 0)
            await tx.commit()
        finally:
            await db_pool.release(earlier)
        await asyncio.wait_for(run, 30)
    assert writer.stats.skipped_committed == 8 and writer.stats.offsets_moved == 0
    assert await stored_sequence_numbers(db_pool) == (1000, 1000)


async def test_postgres_unreachable_for_seconds(db_dsn: str, redis_url: str) -> None:
    parts = urlsplit(db_dsn)
    async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
        pool = await asyncpg.create_pool(
            urlunsplit((parts.scheme, netloc, parts.path, "", "")), min_size=1, max_size=2
        )
        assert pool is not None
        try:
            await reset_market_data(pool)
            feed = await sim_feed(pool)
            async with redis_stream(redis_url) as (redis, stream):
                receiver = TickReceiver(redis, stream=stream, max_entries=100_000, local_max_frames=100)
                writer = StreamWriter(redis, pool, stream=stream, block_ms=20)
                task = asyncio.create_task(writer.run())
                frames = numbered_frames(feed, 100, 30)
                for n, frame in enumerate(frames):
                    if n == 30:
                        proxy.cut()
                    if n == 70:

                        async def noticed() -> bool:
                            return writer.stats.db_down_since is not None

                        await _wait_for(noticed, timeout_s=20)  # the writer met the outage (slow machines)
                        proxy.heal()
                    await receiver.on_ticks(frame)
                    await asyncio.sleep(0.04)

                async def drained() -> bool:
                    return writer.stats.written == 3000

                await _wait_for(drained)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert await stored_sequence_numbers(pool) == (3000, 3000)
        finally:
            await pool.close()


@asynccontextmanager
async def aof_redis(*, appendonly: bool = True) -> AsyncIterator[tuple[str, object]]:
    """A Redis of our own with AOF on (or nothing on disk); yields its URL and a restart function."""
    server = shutil.which("redis-server")
    assert server, "redis-server is needed for this test (apt-get install redis-server)"
    workdir = tempfile.mkdtemp(prefix="th-aof-")
    port = _free_port()
    args = [
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        workdir,
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "always",
        "--save",
        "",
    ]
    procs = [await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL)]
    url = f"redis://127.0.0.1:{port}/0"

    async def ready() -> bool:
        client = aioredis.Redis.from_url(url)
        try:
            return bool(await client.ping())
        except OSError:
            return False
        except Exception:
            return False
        finally:
            await client.aclose()

    async def restart(down_s: float) -> None:
        client = aioredis.Redis.from_url(url)
        try:
            await client.shutdown()  # graceful: the AOF is complete
        except Exception:
            pass  # the server closes the connection as it exits
        finally:
            await client.aclose()
        await asyncio.wait_for(procs[-1].wait(), timeout=10)
        await asyncio.sleep(down_s)
        procs.append(await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL))
        await _wait_for(ready)

    try:
        await _wait_for(ready)
        yield url, restart
    finally:
        for p in procs:
            if p.returncode is None:
                p.terminate()
                await asyncio.wait_for(p.wait(), timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


async def test_redis_restarted_with_aof_during_a_run(db_pool: asyncpg.Pool) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool)
    async with aof_redis() as (url, restart):
        redis = redis_client(url)  # the client serve and demo use: every read bounded
        receiver = TickReceiver(redis, stream="th:ticks", max_entries=100_000, local_max_frames=1000)
        writer = StreamWriter(redis, db_pool, stream="th:ticks", block_ms=20)
        task = asyncio.create_task(writer.run())
        frames = numbered_frames(feed, 100, 30)
        held = 0
        restarting = None
        for n, frame in enumerate(frames):
            if n == 40:  # frames keep coming while Redis is down
                restarting = asyncio.create_task(restart(1.0))  # type: ignore[operator]
            await receiver.on_ticks(frame)
            held = max(held, len(receiver.local))
            await asyncio.sleep(0.03)
        assert restarting is not None
        await restarting
        assert held > 0, "the receiver never had to hold frames: Redis was not down while frames arrived"

        async def drained() -> bool:
            await receiver.flush()  # a quiet feed: the local queue still goes out
            return writer.stats.written == 3000

        await _wait_for(drained)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()
    assert await stored_sequence_numbers(db_pool) == (3000, 3000)
    assert not receiver.rejected


async def test_redis_restarted_without_persistence_counts_exactly_the_ticks_lost(
    db_pool: asyncpg.Pool,
) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool)
    lost_before = metrics.TICKS_LOST._value.get()
    async with aof_redis(appendonly=False) as (url, restart):
        redis = redis_client(url)
        receiver = TickReceiver(redis, stream="th:ticks", max_entries=100_000, local_max_frames=1000)
        writer = StreamWriter(redis, db_pool, stream="th:ticks", block_ms=20)
        task = asyncio.create_task(writer.run())
        frames = numbered_frames(feed, 100, 30)
        for frame in frames[:30]:
            await receiver.on_ticks(frame)
            await asyncio.sleep(0.01)

        async def caught_up() -> bool:
            await receiver.flush()
            return (
                not receiver.local
                and receiver.last_id is not None
                and writer.committed_through(receiver.last_id)
            )

        await _wait_for(caught_up)
        async with db_pool.acquire() as locker, locker.transaction():
            # the database stalls: entries pile up in the stream, unwritten, when Redis restarts
            await locker.execute("LOCK TABLE tick_data IN ACCESS EXCLUSIVE MODE")
            for frame in frames[30:60]:
                await receiver.on_ticks(frame)
                await asyncio.sleep(0.01)
            await restart(0.5)  # type: ignore[operator]
        for frame in frames[60:]:
            await receiver.on_ticks(frame)
            await asyncio.sleep(0.01)
        await _wait_for(caught_up)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()
    rows, distinct = await stored_sequence_numbers(db_pool)
    assert rows == distinct, "a tick was written twice"
    assert not receiver.rejected
    assert 0 < writer.stats.lost == 3000 - rows, "the lost ticks are counted, exactly"
    assert writer.status()["lost"] == writer.stats.lost
    assert metrics.TICKS_LOST._value.get() - lost_before == writer.stats.lost
    assert writer.status()["redis_persistence"] == "none"
    assert (
        await db_pool.fetchval("SELECT sum(lost) FROM ingest_sequences WHERE stream = 'th:ticks'")
        == writer.stats.lost
    )
