"""The pure tick-batch step and the binary COPY rows it builds, without a database."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import numpy as np

from tests.ingest.direct_writer import chunks_of
from trading_helper.ingest.batch import VolumeReset, build_batch, merge_batches
from trading_helper.ingest.volume import to_us
from trading_helper.ingest.volume_book import VolumeBook
from trading_helper.models import Tick
from trading_helper.storage.pgcopy import HEADER, TRAILER, Kind, encode
from trading_helper.storage.ticks import QUOTE_COLUMNS, TICK_COLUMNS

NOW = datetime(2026, 11, 30, 5, 0, 0, tzinfo=UTC)  # 10:30 IST


def tick(
    iid: int,
    at: datetime,
    price: float = 100.0,
    volume: int | None = None,
    qty: int | None = None,
    trade: datetime | None = None,
    **more: object,
) -> Tick:
    return Tick(
        instrument_id=iid,
        exchange_ts=at,
        received_ts=at + timedelta(milliseconds=300),
        last_price=price,
        last_quantity=qty,
        volume=volume,
        trade_ts=trade,
        **more,
    )  # type: ignore[arg-type]


def test_binary_rows_hold_nulls_and_slice_by_row() -> None:
    kinds = (Kind.TIMESTAMPTZ, Kind.INT4, Kind.INT8, Kind.FLOAT8)
    t = np.array([to_us(NOW), to_us(NOW) + 1, to_us(NOW) + 2], np.int64)
    ints = np.array([1, -1, 3], np.int64)
    floats = np.array([1.5, 2.5, float("nan")])
    rows = encode(kinds, [(t, None), (ints, None), (ints, ints < 0), (floats, np.isnan(floats))])
    assert rows.rows() == [
        (NOW, 1, 1, 1.5),
        (NOW + timedelta(microseconds=1), -1, None, 2.5),
        (NOW + timedelta(microseconds=2), 3, 3, None),
    ]
    # row 1: field count, then length + value per field; the NULL bigint is a length of -1 alone
    start = int(rows.ends[0])
    assert rows.data[start : int(rows.ends[1])] == (
        struct.pack(">h", 4)
        + struct.pack(">iq", 8, to_us(NOW) + 1 - 946_684_800_000_000)
        + struct.pack(">ii", 4, -1)
        + struct.pack(">i", -1)
        + struct.pack(">id", 8, 2.5)
    )
    assert rows.payload(1, 2) == HEADER + rows.data[start : int(rows.ends[1])] + TRAILER
    assert rows.payload() == HEADER + rows.data + TRAILER


def test_a_batch_splits_trades_from_quotes_counts_rejects_and_names_entries() -> None:
    known = {1, 2}
    capture = NOW - timedelta(minutes=1)
    first = [
        tick(1, NOW, 100.0, volume=500, qty=5, trade=NOW, open_interest=75, bid_price=99.5, bid_quantity=3),
        tick(1, NOW + timedelta(seconds=1), 100.0, volume=500, qty=5, trade=NOW),  # the same trade again
        tick(2, NOW, -1.0),
    ]  # bad price
    second = [
        tick(9, NOW, 50.0),  # unknown instrument
        tick(2, NOW - timedelta(days=60), 50.0),  # far too old
        tick(2, NOW, 50.0, volume=10, qty=2**31),
    ]  # quantity beyond int4
    chunks = [VolumeReset(frozenset({1}), to_us(capture)), *chunks_of(first), *chunks_of(second)]
    tracker = VolumeBook()
    batch = build_batch(chunks, tracker, known, to_us(NOW), entry_starts=[0, 3], entry_ids=["1-0", "2-0"])
    assert dict(batch.rejected) == {
        "bad_price": 1,
        "unknown_instrument": 1,
        "timestamp_out_of_range": 1,
        "bad_quantity": 1,
    }
    assert batch.unknown == {9}
    [trade] = [dict(zip(TICK_COLUMNS, r, strict=True)) for r in batch.write.trades.rows.rows()]
    assert (
        trade["time"],
        trade["instrument_id"],
        trade["volume_delta"],
        trade["open_interest"],
        trade["bid_qty"],
        trade["ask_price"],
        trade["exchange_time"],
    ) == (NOW, 1, 5, 75, 3, None, NOW)
    [quote] = [dict(zip(QUOTE_COLUMNS, r, strict=True)) for r in batch.write.quotes.rows.rows()]
    assert (quote["time"], quote["trade_time"], quote["volume"]) == (NOW + timedelta(seconds=1), NOW, 500)
    assert batch.write.trades.entry_of is not None and batch.write.trades.entry_of.tolist() == [0]
    assert batch.write.quotes.entry_of is not None and batch.write.quotes.entry_of.tolist() == [0]
    assert (batch.write.trades.first_us, batch.write.trades.last_us) == (to_us(NOW), to_us(NOW))
    assert [r[0] for r in batch.write.volume_rows] == [1]
    assert batch.received_us.tolist() == [to_us(t.received_ts) for t in first + second]
    assert batch.rows == 2


def test_batches_prepared_one_read_at_a_time_merge_into_the_batch_of_all_reads() -> None:
    """The writer prepares each read while a commit runs and commits them together: the merged
    batch holds the same rows, entries, volume state and rejects as one batch of every read."""
    known = {1, 2, 3}
    reads = [
        [tick(1, NOW, 100.0, volume=500, qty=5, trade=NOW), tick(2, NOW, -1.0), tick(3, NOW, 7.0)],
        [tick(1, NOW + timedelta(seconds=1), 101.0, volume=500, qty=5, trade=NOW)],  # a quote only
        [tick(1, NOW + timedelta(seconds=2), 102.0, volume=520, qty=20, trade=NOW + timedelta(seconds=2))],
        [tick(9, NOW, 50.0), tick(2, NOW, 50.0, volume=10, qty=1, trade=NOW)],
    ]
    ids = [f"{n}-0" for n in range(len(reads))]
    whole = build_batch(
        [c for r in reads for c in chunks_of(r)],
        VolumeBook(),
        known,
        to_us(NOW),
        entry_starts=np.cumsum([0] + [len(r) for r in reads[:-1]]).tolist(),
        entry_ids=ids,
    )
    tracker = VolumeBook()
    parts = [
        build_batch(chunks_of(r), tracker, known, to_us(NOW), entry_starts=[0], entry_ids=[i])
        for r, i in zip(reads, ids, strict=True)
    ]
    merged = merge_batches(parts)
    for relation in ("trades", "quotes"):
        got, want = getattr(merged.write, relation), getattr(whole.write, relation)
        assert got.rows.rows() == want.rows.rows() and len(got) > 0
        assert got.rows.payload() == want.rows.payload()
        assert (got.first_us, got.last_us) == (want.first_us, want.last_us)
        assert got.entry_of is not None and want.entry_of is not None
        assert got.entry_of.tolist() == want.entry_of.tolist()
    assert list(merged.write.entry_ids) == ids
    assert sorted(merged.write.volume_rows) == sorted(whole.write.volume_rows)
    assert merged.rejected == whole.rejected == {"bad_price": 1, "unknown_instrument": 1}
    assert merged.unknown == {9}
    assert merged.received_us.tolist() == whole.received_us.tolist()
    assert merged.last_exchange_us == whole.last_exchange_us
