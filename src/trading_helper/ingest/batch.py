"""The tick-batch step: stream payloads and volume state in, COPY rows and counted rejects out.

Pure (no I/O): given the tick records of a batch of stream entries (their payloads, as the
receiver wrote them, :mod:`.codec`), the capture starts between them (:class:`VolumeReset`), the
instruments known to exist and the volume state (:class:`~.volume_book.VolumeBook`, updated in
place), :func:`build_batch` returns

* the trade rows for ``tick_data`` and the updates without a new trade for ``quote_updates``
  (:mod:`.volume` decides which is which, the candle time and the volume increment), in binary
  COPY format, built straight from the payload bytes with numpy;
* the ``tick_volume_state`` rows changed;
* bad ticks counted by reason (they are left out; they never abort the batch): ``bad_price``,
  ``timestamp_out_of_range``, ``unknown_instrument`` (the ids are returned too), ``bad_quantity``.

Nothing runs per tick in Python: the checks, the volume rules (:class:`~.volume_book.VolumeBook`,
by rounds of distinct instruments), and copying, converting and encoding every column run for
the whole batch at once; the instrument check is one set lookup per distinct id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from trading_helper.ingest.codec import RECORD, RECORD_DTYPE
from trading_helper.ingest.volume import NO_TRADE
from trading_helper.ingest.volume_book import VolumeBook
from trading_helper.models import MAX_CLOCK_SKEW, MAX_TICK_AGE
from trading_helper.storage.pgcopy import concat, encode
from trading_helper.storage.ticks import QUOTE_KINDS, TICK_KINDS, TickRows, TickWrite, VolumeStateRow, no_rows

_SKEW_US = int(MAX_CLOCK_SKEW.total_seconds()) * 1_000_000
_AGE_US = int(MAX_TICK_AGE.total_seconds()) * 1_000_000
_INF = float("inf")
_INT4 = 2**31 - 1


@dataclass(slots=True, frozen=True)
class VolumeReset:
    """Marker in the tick flow: the feed (re)connected or subscribed these instruments at
    ``at_us`` (epoch µs; None in entries from before schema version 6), so their capture started
    again. The volume baseline is kept (see :mod:`trading_helper.ingest.volume`); the time tells
    a snapshot of an older trade from a new one."""

    instrument_ids: frozenset[int]
    at_us: int | None = None


#: one piece of a batch: the tick records of a stream entry, or a capture start
Chunk = bytes | VolumeReset


@dataclass(slots=True)
class TickBatch:
    """What :func:`build_batch` makes of a batch; ``write`` is what storage commits."""

    write: TickWrite
    rejected: Counter[str] = field(default_factory=Counter)
    unknown: set[int] = field(default_factory=set)
    #: the receive times (epoch µs) of the batch's records, in arrival order
    received_us: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    #: exchange time of the last record (epoch µs; -1: none)
    last_exchange_us: int = -1
    #: per record, when its entry was accepted by the receiver and read by the writer (epoch µs;
    #: set by a writer that measures its stages, see :mod:`.lags`; empty otherwise)
    accepted_us: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    read_us: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def rows(self) -> int:
        return len(self.write.trades) + len(self.write.quotes)


def instrument_ids(chunks: Sequence[Chunk]) -> set[int]:
    """The instruments the records of ``chunks`` name."""
    ids: set[int] = set()
    for chunk in chunks:
        if not isinstance(chunk, VolumeReset):
            ids.update(np.frombuffer(chunk, RECORD_DTYPE)["iid"].tolist())
    return ids


def build_batch(
    chunks: Sequence[Chunk],
    tracker: VolumeBook,
    known_ids: set[int] | frozenset[int],
    now_us: int,
    *,
    entry_starts: Sequence[int] = (),
    entry_ids: Sequence[str] = (),
) -> TickBatch:
    """The rows of ``chunks`` (see the module docstring). ``entry_starts``: the index of the
    first record of each stream entry (in ``entry_ids``), so a refused row can name its entry."""
    newest, oldest = now_us + _SKEW_US, now_us - _AGE_US
    records = np.frombuffer(b"".join(c for c in chunks if not isinstance(c, VolumeReset)), RECORD_DTYPE)
    # the checks that need no state, for the whole batch at once (in the order of the reasons)
    ltp, ex = records["ltp"], records["ex"]
    bad_price = ~((ltp > 0.0) & (ltp < _INF))  # NaN fails too
    bad_time = ~bad_price & ((ex < oldest) | (ex > newest))
    candidates = ~(bad_price | bad_time)
    rejected = Counter[str]()
    for reason, mask in (("bad_price", bad_price), ("timestamp_out_of_range", bad_time)):
        if n := int(mask.sum()):
            rejected[reason] = n
    bad_qty = (records["qty"] > _INT4) | (records["bq"] > _INT4) | (records["aq"] > _INT4)
    # which instruments exist: one set lookup per distinct id of the batch
    ids, each = np.unique(records["iid"], return_inverse=True)
    known = np.fromiter((i in known_ids for i in ids.tolist()), bool, len(ids))[each]
    unknown_at = candidates & ~known
    good = np.flatnonzero(candidates & known & ~bad_qty)
    n_unknown, n_bad_qty = int(unknown_at.sum()), int((candidates & known & bad_qty).sum())
    unknown = set(records["iid"][unknown_at].tolist())
    # the volume rules, in arrival order; capture starts split the batch where they came
    times = np.full(len(records), NO_TRADE, np.int64)
    delta = np.zeros(len(records), np.int64)
    slots = tracker.slots(records["iid"][good])
    end = done = 0  # records before the next chunk; good records applied
    for chunk in [*chunks, None]:
        if chunk is not None and not isinstance(chunk, VolumeReset):
            end += len(chunk) // RECORD.size
            continue
        upto = int(np.searchsorted(good, end))
        if upto > done:
            at, s = good[done:upto], slots[done:upto]
            times[at], delta[at] = tracker.apply(
                s, ex[at], records["tr"][at], records["vol"][at], records["qty"][at]
            )
            done = upto
        if chunk is not None:
            tracker.reset(chunk.instrument_ids, chunk.at_us)
    # no new trade (or a trade time no candle may take): quotes and OI only
    trade = (times >= oldest) & (times <= newest)
    trade_at = good[trade[good]]
    quote_at = good[~trade[good]]
    if n_unknown:
        rejected["unknown_instrument"] = n_unknown
    if n_bad_qty:
        rejected["bad_quantity"] = n_bad_qty
    starts = np.asarray(entry_starts, np.int64)
    trades = _trade_rows(records, trade_at, times[trade_at], delta[trade_at], starts)
    quotes = _quote_rows(records, quote_at, starts)
    write = TickWrite(trades, quotes, tracker.take_changes(), entry_ids)
    return TickBatch(
        write,
        rejected,
        unknown,
        records["rx"].astype(np.int64),
        int(records["ex"][-1]) if len(records) else -1,
    )


def merge_batches(batches: Sequence[TickBatch]) -> TickBatch:
    """One batch of the rows of ``batches`` (prepared in this order from consecutive reads), to be
    committed in one transaction: rows one after the other, each tick_volume_state row as the
    latest batch left it, rejects added up."""
    if len(batches) == 1:
        return batches[0]
    entry_ids: list[str] = []
    shifts: list[int] = []
    volume: dict[int, VolumeStateRow] = {}
    rejected = Counter[str]()
    unknown = set[int]()
    for b in batches:
        shifts.append(len(entry_ids))
        entry_ids.extend(b.write.entry_ids)
        volume.update((row[0], row) for row in b.write.volume_rows)
        rejected.update(b.rejected)
        unknown |= b.unknown
    write = TickWrite(
        _concat_rows([b.write.trades for b in batches], shifts),
        _concat_rows([b.write.quotes for b in batches], shifts),
        list(volume.values()),
        entry_ids,
    )
    last_exchange = [b.last_exchange_us for b in batches if b.last_exchange_us >= 0]
    return TickBatch(
        write,
        rejected,
        unknown,
        np.concatenate([b.received_us for b in batches]),
        last_exchange[-1] if last_exchange else -1,
        np.concatenate([b.accepted_us for b in batches]),
        np.concatenate([b.read_us for b in batches]),
    )


def _concat_rows(parts: Sequence[TickRows], shifts: Sequence[int]) -> TickRows:
    filled = [(p, shift) for p, shift in zip(parts, shifts, strict=True) if len(p)]
    if not filled:
        return parts[0]
    entry_of = np.concatenate(
        [
            p.entry_of + shift if p.entry_of is not None else np.full(len(p), -1, np.int64)
            for p, shift in filled
        ]
    )
    return TickRows(
        concat([p.rows for p, _ in filled]),
        min(p.first_us for p, _ in filled),
        max(p.last_us for p, _ in filled),
        entry_of,
    )


def _entry_of(at: npt.NDArray[np.int64], starts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64] | None:
    if not len(starts):
        return None
    return np.searchsorted(starts, at, side="right").astype(np.int64) - 1


def _trade_rows(
    records: npt.NDArray[np.void],
    index: npt.NDArray[np.int64],
    times: npt.NDArray[np.int64],
    delta: npt.NDArray[np.int64],
    starts: npt.NDArray[np.int64],
) -> TickRows:
    if not len(index):
        return no_rows(TICK_KINDS)
    r = records[index]
    qty, vol, oi, bq, aq = r["qty"], r["vol"], r["oi"], r["bq"], r["aq"]
    avg, bp, ap = r["avg"], r["bp"], r["ap"]
    rows = encode(
        TICK_KINDS,
        [
            (times, None),
            (r["iid"], None),
            (r["ltp"], None),
            (qty, qty < 0),
            (vol, vol < 0),
            (delta, None),
            (avg, np.isnan(avg)),
            (oi, oi < 0),
            (bp, np.isnan(bp)),
            (bq, bq < 0),
            (ap, np.isnan(ap)),
            (aq, aq < 0),
            (r["rx"], None),
            (r["ex"], None),
        ],
    )
    return TickRows(rows, int(times.min()), int(times.max()), _entry_of(index, starts))


def _quote_rows(
    records: npt.NDArray[np.void], index: npt.NDArray[np.int64], starts: npt.NDArray[np.int64]
) -> TickRows:
    if not len(index):
        return no_rows(QUOTE_KINDS)
    r = records[index]
    times = r["ex"]
    qty, vol, oi, bq, aq, tr = r["qty"], r["vol"], r["oi"], r["bq"], r["aq"], r["tr"]
    avg, bp, ap = r["avg"], r["bp"], r["ap"]
    rows = encode(
        QUOTE_KINDS,
        [
            (times, None),
            (r["iid"], None),
            (r["ltp"], None),
            (qty, qty < 0),
            (vol, vol < 0),
            (avg, np.isnan(avg)),
            (oi, oi < 0),
            (bp, np.isnan(bp)),
            (bq, bq < 0),
            (ap, np.isnan(ap)),
            (aq, aq < 0),
            (r["rx"], None),
            (tr, tr < 0),
        ],
    )
    return TickRows(rows, int(times.min()), int(times.max()), _entry_of(index, starts))
