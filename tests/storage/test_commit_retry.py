"""A retried tick batch is never written twice: a try can fail after the server committed it (the
connection died before the reply), and the next try must find that out, also while the earlier
transaction is still finishing on the server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.ingest.direct_writer import DirectWriter, PreparedBatch
from tests.storage.helpers import make_instruments, reset_market_data
from trading_helper.errors import OffsetMoved
from trading_helper.ingest.codec import tick_record
from trading_helper.models import Tick
from trading_helper.storage.ticks import TICK_COLUMNS, StreamOffset


async def _batch(db_pool: asyncpg.Pool) -> tuple[DirectWriter, PreparedBatch]:
    await reset_market_data(db_pool)
    [iid] = await make_instruments(db_pool, 1, prefix="RETRY")
    writer = await DirectWriter.open(db_pool)
    return writer, await _ticks(writer, iid, 0)


async def _ticks(writer: DirectWriter, iid: int, first: int) -> PreparedBatch:
    """20 trades of ``iid``, one a second, the first ``first`` seconds after five minutes ago."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    ticks = [
        Tick(
            instrument_id=iid,
            exchange_ts=start + timedelta(seconds=i),
            received_ts=start + timedelta(seconds=i),
            last_price=100.0 + i,
            last_quantity=5,
            volume=100 + 5 * i,
        )
        for i in range(first, first + 20)
    ]
    batch = await writer.prepare_batch([tick_record(t) for t in ticks])
    assert len(batch.rows) == 20
    return batch


async def test_a_retry_after_a_commit_whose_reply_was_lost_writes_nothing(db_pool: asyncpg.Pool) -> None:
    writer, batch = await _batch(db_pool)
    offset = StreamOffset("retry-1", "1700000000000-3")
    first = await writer.commit(batch, offset)
    assert first.written == 20 and not first.already_committed
    batch.retried = True  # as after a lost connection: the writer cannot tell whether it committed
    again = await writer.commit(batch, offset)
    assert again.already_committed and again.written == 20
    assert await db_pool.fetchval("SELECT count(*) FROM tick_data") == 20


async def test_a_retry_waits_for_the_earlier_try_still_committing(db_pool: asyncpg.Pool) -> None:
    """The earlier try's transaction holds the offset row; the retry waits for it, then sees that
    it committed and writes nothing; had it rolled back, the retry writes the batch."""
    for outcome in ("commit", "rollback"):
        writer, batch = await _batch(db_pool)
        stream = f"retry-{outcome}"
        offset = StreamOffset(stream, "1700000000000-9")
        earlier = await db_pool.acquire()
        try:
            tx = earlier.transaction()
            await tx.start()
            await earlier.copy_records_to_table("tick_data", records=batch.rows, columns=TICK_COLUMNS)
            await earlier.execute(
                "INSERT INTO ingest_offsets (stream, last_id) VALUES ($1, $2)", stream, offset.last_id
            )
            batch.retried = True
            retry = asyncio.create_task(writer.commit(batch, offset))
            await asyncio.sleep(0.5)
            assert not retry.done()  # it waits on the offset row, it does not write beside the earlier try
            await (tx.commit() if outcome == "commit" else tx.rollback())
            result = await asyncio.wait_for(retry, 10)
        finally:
            await db_pool.release(earlier)
        assert result.already_committed is (outcome == "commit")
        assert await db_pool.fetchval("SELECT count(*) FROM tick_data") == 20
        assert (
            await db_pool.fetchval("SELECT last_id FROM ingest_offsets WHERE stream = $1", stream)
            == offset.last_id
        )


async def test_a_commit_over_an_offset_another_commit_moved_is_refused_and_writes_nothing(
    db_pool: asyncpg.Pool,
) -> None:
    """The offset is compared and set: a second writer of a stream (or a stale one) that builds on
    an offset that is no longer the committed one gets OffsetMoved and its rows are rolled back."""
    writer, batch = await _batch(db_pool)
    stream = "moved-1"
    first = await writer.commit(batch, StreamOffset(stream, "1700000000000-3"))
    assert first.written == 20
    other = await _ticks(writer, await db_pool.fetchval("SELECT instrument_id FROM tick_data LIMIT 1"), 20)
    with pytest.raises(OffsetMoved, match="no longer 0-0"):
        await writer.commit(other, StreamOffset(stream, "1700000000000-7", expect=None))
    with pytest.raises(OffsetMoved, match="no longer 1700000000000-2"):
        await writer.commit(other, StreamOffset(stream, "1700000000000-7", expect="1700000000000-2"))
    assert await db_pool.fetchval("SELECT count(*) FROM tick_data") == 20
    done = await writer.commit(other, StreamOffset(stream, "1700000000000-7", expect="1700000000000-3"))
    assert done.written == 20 and await db_pool.fetchval("SELECT count(*) FROM tick_data") == 40
    assert await db_pool.fetchval("SELECT last_id FROM ingest_offsets WHERE stream = $1", stream) == (
        "1700000000000-7"
    )
