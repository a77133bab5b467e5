"""The writer never stops silently and never loses a good tick: resource errors retried and logged
once, rows the database refuses dead-lettered while the rest commits, a cancelled COPY retried, an
unexpected error logged and raised (a new run resumes), new instruments written at once."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from tests.fakes.sink import wait_until
from tests.ingest.helpers import (
    numbered_frames,
    redis_stream,
    running_writer,
    sim_feed,
    stored_sequence_numbers,
)
from tests.storage.helpers import make_instruments, reset_market_data
from trading_helper.brokers.sim import SimFeed
from trading_helper.config import Settings
from trading_helper.ingest import metrics
from trading_helper.ingest.receiver import TickReceiver
from trading_helper.ingest.stream import decode_entry
from trading_helper.ingest.writer import StreamWriter
from trading_helper.storage.instruments import lookup_tokens

pytestmark = pytest.mark.timeout(120)

_SWITCH = """
CREATE TABLE IF NOT EXISTS test_fault (sqlstate text);
CREATE OR REPLACE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE s text := (SELECT sqlstate FROM test_fault LIMIT 1);
BEGIN
    IF s IS NOT NULL THEN
        RAISE EXCEPTION 'simulated failure %', s USING ERRCODE = s;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER test_fault BEFORE INSERT ON tick_data FOR EACH STATEMENT EXECUTE FUNCTION test_fault();
"""


@asynccontextmanager
async def fault_switch(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Every insert into tick_data raises the SQLSTATE in table test_fault while it holds one."""
    await pool.execute(_SWITCH)
    try:
        yield
    finally:
        await pool.execute("DROP TRIGGER test_fault ON tick_data; DROP TABLE test_fault")


async def _send(receiver: TickReceiver, frames: list, pause_s: float = 0.01) -> None:  # type: ignore[type-arg]
    for frame in frames:
        await receiver.on_ticks(frame)
        await asyncio.sleep(pause_s)
    await receiver.flush()  # frames handed soon after a send go out together; the last may still wait


async def test_disk_full_for_a_while_is_retried_logged_once_and_loses_nothing(
    db_pool: asyncpg.Pool, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool)
    before = metrics.DB_RESOURCE_ERRORS.labels("53100")._value.get()
    async with (
        fault_switch(db_pool),
        redis_stream(redis_url) as (redis, stream),
        running_writer(redis, db_pool, stream) as (receiver, writer, task),
    ):
        frames = numbered_frames(feed, 60, 50)
        await _send(receiver, frames[:10])
        await wait_until(lambda: writer.stats.written == 500, within_s=30)
        await db_pool.execute("INSERT INTO test_fault VALUES ('53100')")  # disk full from now on
        await _send(receiver, frames[10:40])
        await wait_until(lambda: writer.stats.db_busy_errors >= 3, within_s=30)
        assert writer.status()["db_busy"] is True and writer.status()["db_down"] is False
        assert "53100" in str(writer.status()["last_db_error"])
        assert not task.done(), "the writer stopped on a full disk"
        await db_pool.execute("DELETE FROM test_fault")  # space freed
        await _send(receiver, frames[40:])
        await wait_until(lambda: writer.stats.written == 3000, within_s=30)
        assert writer.status()["db_busy"] is False
    assert await stored_sequence_numbers(db_pool) == (3000, 3000)
    refusals = [r for r in caplog.records if "refuses tick writes" in r.getMessage()]
    assert len(refusals) == 1, "one log line per episode"
    assert metrics.DB_RESOURCE_ERRORS.labels("53100")._value.get() - before == writer.stats.db_busy_errors


async def test_rows_refused_by_a_check_are_dead_lettered_and_the_rest_commits(
    db_pool: asyncpg.Pool, redis_url: str
) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool)
    # a rule the database enforces and some rows break: every tick whose sequence number is 7 mod 250
    await db_pool.execute("ALTER TABLE tick_data ADD CONSTRAINT test_poison CHECK (bid_qty % 250 <> 7)")
    dead_before = metrics.TICKS_DEAD_LETTERED._value.get()
    try:
        async with redis_stream(redis_url) as (redis, stream):
            receiver = TickReceiver(redis, stream=stream, max_entries=100_000, local_max_frames=100)
            frames = numbered_frames(feed, 100, 30)
            await _send(receiver, frames[:50], 0)
            writer = StreamWriter(redis, db_pool, stream=stream, block_ms=20)
            await writer.run(stop_when_idle=True)
            # a new writer (a restart) neither retries the refused rows nor blocks on them
            await _send(receiver, frames[50:], 0)
            again = StreamWriter(redis, db_pool, stream=stream, block_ms=20)
            await again.run(stop_when_idle=True)
            entries = await redis.xrange(stream)
            entry_ids = {e[0].decode() for e in entries}
            # stream entry -> the sequence numbers (bid_qty, field 9 of a record) of its ticks
            seqs_of = {d.entry_id: {r[9] for r in d.items} for d in (decode_entry(i, f) for i, f in entries)}
    finally:
        await db_pool.execute("ALTER TABLE tick_data DROP CONSTRAINT test_poison")
    bad = {n for n in range(3000) if n % 250 == 7}
    assert writer.stats.dead_lettered + again.stats.dead_lettered == len(bad) == 12
    assert writer.stats.written + again.stats.written == 3000 - len(bad)
    assert metrics.TICKS_DEAD_LETTERED._value.get() - dead_before == len(bad)
    rows = await db_pool.fetch(
        "SELECT stream, entry_id, (row->>'bid_qty')::int AS seq, sqlstate, reason FROM tick_rejects"
    )
    assert sorted(r["seq"] for r in rows) == sorted(bad)
    assert all(r["stream"] == stream and r["seq"] in seqs_of[r["entry_id"]] for r in rows), (
        "each names its entry"
    )
    assert all(r["sqlstate"] == "23514" and "test_poison" in r["reason"] for r in rows)
    stored = {r[0] for r in await db_pool.fetch("SELECT bid_qty FROM tick_data")}
    assert stored == set(range(3000)) - bad
    assert await db_pool.fetchval("SELECT count(*) FROM tick_data") == 3000 - len(bad)
    assert await db_pool.fetchval("SELECT last_id FROM ingest_offsets WHERE stream = $1", stream) == max(
        entry_ids, key=lambda i: tuple(map(int, i.split("-")))
    )


async def test_a_cancelled_copy_is_retried_and_written_once(db_pool: asyncpg.Pool, redis_url: str) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool)
    async with (
        redis_stream(redis_url) as (redis, stream),
        running_writer(redis, db_pool, stream) as (receiver, writer, task),
    ):
        frames = numbered_frames(feed, 40, 50)
        await _send(receiver, frames[:5])
        await wait_until(lambda: writer.stats.written == 250, within_s=30)
        async with db_pool.acquire() as locker, locker.transaction():
            # the writer's next COPY waits for this lock; cancel it as statement_timeout would
            await locker.execute("LOCK TABLE tick_data IN ACCESS EXCLUSIVE MODE")
            await _send(receiver, frames[5:20])
            cancelled = False
            for _ in range(3000):
                pids = await locker.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
                if pids:
                    cancelled = all(
                        [await locker.fetchval("SELECT pg_cancel_backend($1)", p[0]) for p in pids]
                    )
                    break
                await asyncio.sleep(0.01)
            assert cancelled, "the writer's write never waited on the lock"
            await wait_until(lambda: writer.stats.db_busy_errors >= 1, within_s=30)
        await _send(receiver, frames[20:])
        await wait_until(lambda: writer.stats.written == 2000, within_s=30)
        assert not task.done()
    assert "57014" in str(writer.stats.last_db_error)
    assert await stored_sequence_numbers(db_pool) == (2000, 2000)


async def test_an_unexpected_error_is_logged_and_raised_and_a_new_run_resumes(
    db_pool: asyncpg.Pool, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool)
    async with fault_switch(db_pool), redis_stream(redis_url) as (redis, stream):
        receiver = TickReceiver(redis, stream=stream, max_entries=100_000, local_max_frames=100)
        frames = numbered_frames(feed, 20, 50)
        await _send(receiver, frames, 0)
        await db_pool.execute("INSERT INTO test_fault VALUES ('XX000')")  # not a row, not a resource
        writer = StreamWriter(redis, db_pool, stream=stream, block_ms=20)
        with caplog.at_level(logging.ERROR), pytest.raises(asyncpg.PostgresError, match="simulated failure"):
            await asyncio.wait_for(writer.run(), timeout=30)
        assert any("stopped by an unexpected error" in r.getMessage() and r.exc_info for r in caplog.records)
        assert "simulated failure" in str(writer.status()["error"])
        await db_pool.execute("DELETE FROM test_fault")
        await writer.run(stop_when_idle=True)  # what a supervisor does: run it again
        assert writer.status()["error"] is None
    assert writer.stats.written == 1000
    assert await stored_sequence_numbers(db_pool) == (1000, 1000)


async def test_instruments_added_after_the_writer_started_are_written_at_once(
    db_pool: asyncpg.Pool, redis_url: str
) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool, count=5)
    async with (
        redis_stream(redis_url) as (redis, stream),
        running_writer(redis, db_pool, stream) as (receiver, writer, _),
    ):
        await _send(receiver, numbered_frames(feed, 5, 20))
        await wait_until(lambda: writer.stats.written == 100, within_s=30)
        # a sync or subscription while running: ticks of the new instruments come at once
        new_ids = await make_instruments(db_pool, 20, prefix="LATE")
        async with db_pool.acquire() as conn:
            mapping = await lookup_tokens(conn, "sim", [f"LATE{n}" for n in range(20)])
        assert sorted(mapping.values()) == sorted(new_ids)
        late = SimFeed(Settings())
        await late.subscribe(mapping)
        await _send(receiver, numbered_frames(late, 10, 40, first=100))
        await wait_until(lambda: writer.stats.written == 500, within_s=30)
    assert writer.stats.rejected.get("unknown_instrument", 0) == 0
    assert await stored_sequence_numbers(db_pool) == (500, 500)
    assert (
        await db_pool.fetchval(
            "SELECT count(DISTINCT instrument_id) FROM tick_data WHERE instrument_id = ANY($1::integer[])",
            new_ids,
        )
        == 20
    )


async def test_writer_killed_while_isolating_refused_rows_then_restarted_keeps_exactly_once(
    db_pool: asyncpg.Pool, db_dsn: str, redis_url: str
) -> None:
    await reset_market_data(db_pool)
    feed = await sim_feed(db_pool)
    await db_pool.execute("ALTER TABLE tick_data ADD CONSTRAINT test_poison CHECK (bid_qty % 97 <> 0)")
    try:
        async with redis_stream(redis_url) as (redis, stream):
            receiver = TickReceiver(redis, stream=stream, max_entries=100_000, local_max_frames=100)
            await _send(receiver, numbered_frames(feed, 100, 100), 0)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.ingest.writer_proc", db_dsn, redis_url, stream
            )
            try:
                for _ in range(3000):
                    if await db_pool.fetchval("SELECT count(*) FROM tick_rejects") >= 5:
                        break
                    await asyncio.sleep(0.01)
            finally:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            assert await db_pool.fetchval("SELECT count(*) FROM tick_rejects") < 104, (
                "finished before the kill"
            )
            writer = StreamWriter(redis, db_pool, stream=stream, entries_per_read=10)
            await writer.run(stop_when_idle=True)
    finally:
        await db_pool.execute("ALTER TABLE tick_data DROP CONSTRAINT test_poison")
    bad = {n for n in range(10_000) if n % 97 == 0}
    refused = [r[0] for r in await db_pool.fetch("SELECT (row->>'bid_qty')::int FROM tick_rejects")]
    assert sorted(refused) == sorted(bad), "each refused row dead-lettered once"
    assert await stored_sequence_numbers(db_pool) == (10_000 - len(bad), 10_000 - len(bad))
