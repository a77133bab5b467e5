"""Compact binary encoding of ticks for the Redis stream, the live fan-out and latest quotes.

One stream entry holds all ticks of one received frame, so the per-message cost is paid per
frame, not per tick. Each tick is one fixed-size little-endian record (``struct`` packs and
unpacks it in C; JSON would cost several times more per tick on the hot path). ``None`` is
carried as NaN for prices and -1 for quantities and the trade time, which are never negative.

The record's last field, the last-trade time, was added in schema version 6; payloads written
before it (92-byte records, without it) are still read: :func:`decode_records` with
``legacy=True`` for stream entries (their field name tells), and by size for latest quotes.

A latest-quote value is one tick record optionally followed by its market depth: a count byte
per side, then (price, quantity, orders) per level.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Container, Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain

import numpy as np

from trading_helper.ingest.volume import to_us
from trading_helper.models import DepthLevel, Tick

_TICK = struct.Struct("<qqidqqdqdqdqq")
#: where a record holds its instrument id (exchange time, receive time, instrument id, ...)
_IID = 2
_LEGACY_TICK = struct.Struct("<qqidqqdqdqdq")  # before the trade time was carried
_LEVEL = struct.Struct("<dqi")
#: the record layout, for readers of whole payloads: ``struct`` for loops, numpy for columns
RECORD = _TICK
RECORD_DTYPE = np.dtype(
    [
        ("ex", "<i8"),
        ("rx", "<i8"),
        ("iid", "<i4"),
        ("ltp", "<f8"),
        ("qty", "<i8"),
        ("vol", "<i8"),
        ("avg", "<f8"),
        ("oi", "<i8"),
        ("bp", "<f8"),
        ("bq", "<i8"),
        ("ap", "<f8"),
        ("aq", "<i8"),
        ("tr", "<i8"),
    ]
)
TICK_SIZE = _TICK.size
LEGACY_TICK_SIZE = _LEGACY_TICK.size
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAN = float("nan")

#: a tick as the writer handles it: (exchange µs, received µs, instrument id, last price, last qty,
#: day volume, average price, OI, bid price, bid qty, ask price, ask qty, last-trade µs); -1 / NaN
#: for None
Record = tuple[int, int, int, float, int, int, float, int, float, int, float, int, int]


def _pack(t: Tick) -> bytes:
    return _pack_at(t, to_us(t.exchange_ts), to_us(t.received_ts))


def _pack_at(t: Tick, ex: int, rx: int) -> bytes:
    return _TICK.pack(
        ex,
        rx,
        t.instrument_id,
        t.last_price,
        -1 if t.last_quantity is None else t.last_quantity,
        -1 if t.volume is None else t.volume,
        _NAN if t.average_price is None else t.average_price,
        -1 if t.open_interest is None else t.open_interest,
        _NAN if t.bid_price is None else t.bid_price,
        -1 if t.bid_quantity is None else t.bid_quantity,
        _NAN if t.ask_price is None else t.ask_price,
        -1 if t.ask_quantity is None else t.ask_quantity,
        -1 if t.trade_ts is None else to_us(t.trade_ts),
    )


def encode_ticks(ticks: Sequence[Tick]) -> bytes:
    """All ticks of one frame as one payload. Ticks must carry aware timestamps."""
    # the ticks of a frame share their receive time, and often their exchange time, as one
    # object: each is converted once (the conversion is the costliest part of a record)
    parts = []
    rx_dt = ex_dt = None
    rx = ex = 0
    for t in ticks:
        if t.received_ts is not rx_dt:
            rx_dt, rx = t.received_ts, to_us(t.received_ts)
        if t.exchange_ts is not ex_dt:
            ex_dt, ex = t.exchange_ts, to_us(t.exchange_ts)
        parts.append(_pack_at(t, ex, rx))
    return b"".join(parts)


def _tick(rec: Record) -> Tick:
    ex, rx, iid, ltp, qty, vol, avg, oi, bp, bq, ap, aq, tr = rec
    return Tick(
        instrument_id=iid,
        exchange_ts=_EPOCH + timedelta(microseconds=ex),
        received_ts=_EPOCH + timedelta(microseconds=rx),
        last_price=ltp,
        last_quantity=None if qty < 0 else qty,
        volume=None if vol < 0 else vol,
        average_price=None if math.isnan(avg) else avg,
        open_interest=None if oi < 0 else oi,
        bid_price=None if math.isnan(bp) else bp,
        bid_quantity=None if bq < 0 else bq,
        ask_price=None if math.isnan(ap) else ap,
        ask_quantity=None if aq < 0 else aq,
        trade_ts=None if tr < 0 else _EPOCH + timedelta(microseconds=tr),
    )


def tick_record(t: Tick) -> Record:
    """The record of one tick (timestamps must be aware)."""
    return _TICK.unpack(_pack(t))


def current_payload(payload: bytes, *, legacy: bool = False) -> bytes:
    """The payload in today's record layout (``legacy``: one written before the trade time was
    carried, whose records get -1, no trade time); ValueError when its size is wrong."""
    if not legacy:
        if len(payload) % TICK_SIZE:
            raise ValueError(f"tick payload of {len(payload)} bytes is not a multiple of {TICK_SIZE}")
        return payload
    return b"".join(_TICK.pack(*rec) for rec in decode_records(payload, legacy=True))


def decode_records(payload: bytes, *, legacy: bool = False) -> list[Record]:
    """The records of an :func:`encode_ticks` payload (``legacy``: one written before the trade
    time was carried; its records get -1, no trade time); ValueError when its size is wrong."""
    layout = _LEGACY_TICK if legacy else _TICK
    if len(payload) % layout.size:
        raise ValueError(f"tick payload of {len(payload)} bytes is not a multiple of {layout.size}")
    if legacy:
        return [(*rec, -1) for rec in _LEGACY_TICK.iter_unpack(payload)]
    return list(_TICK.iter_unpack(payload))


def decode_ticks(payload: bytes) -> list[Tick]:
    """Inverse of :func:`encode_ticks`; raises ValueError on a payload of the wrong size."""
    if len(payload) % TICK_SIZE:
        raise ValueError(f"tick payload of {len(payload)} bytes is not a multiple of {TICK_SIZE}")
    return [_tick(rec) for rec in _TICK.iter_unpack(payload)]


def decode_ticks_of(payload: bytes, instrument_ids: Container[int]) -> list[Tick]:
    """:func:`decode_ticks`, keeping only the ticks of ``instrument_ids`` (a reader that follows
    a few instruments of a full feed builds only their ticks: the records are cheap, the ticks
    are not); raises ValueError on a payload of the wrong size."""
    if len(payload) % TICK_SIZE:
        raise ValueError(f"tick payload of {len(payload)} bytes is not a multiple of {TICK_SIZE}")
    return [_tick(rec) for rec in _TICK.iter_unpack(payload) if rec[_IID] in instrument_ids]


def encode_quote(tick: Tick) -> bytes:
    """A latest-quote value: the tick and its depth (up to 255 levels a side)."""
    return quote_value(_pack(tick), tick)


_NO_DEPTH = bytes((0, 0))


def quote_value(record: bytes, tick: Tick) -> bytes:
    """:func:`encode_quote` of ``tick`` from its record as :func:`encode_ticks` packed it (the
    receiver's latest quotes reuse the frame's records rather than packing every tick again)."""
    if not tick.bids and not tick.asks:
        return record + _NO_DEPTH
    levels = (*tick.bids, *tick.asks)  # DepthLevel is (price, quantity, orders), _LEVEL's order
    return (
        record
        + bytes((len(tick.bids), len(tick.asks)))
        + _levels(len(levels)).pack(*chain.from_iterable(levels))
    )


#: n levels packed in one call (a call per level cost a full tick's quote 7 us)
_LEVELS: dict[int, struct.Struct] = {}


def _levels(n: int) -> struct.Struct:
    layout = _LEVELS.get(n)
    if layout is None:
        layout = _LEVELS[n] = struct.Struct("<" + _LEVEL.format[1:] * n)
    return layout


_LEGACY_REMAINDERS = (LEGACY_TICK_SIZE % _LEVEL.size, (LEGACY_TICK_SIZE + 2) % _LEVEL.size)


def _quote_record(value: bytes) -> tuple[int, Record]:
    # the two layouts differ in size modulo the 20-byte depth level: 100 or 102 + 20n bytes now,
    # 92 or 94 + 20n before the trade time was carried
    if len(value) % _LEVEL.size in _LEGACY_REMAINDERS:
        return LEGACY_TICK_SIZE, (*_LEGACY_TICK.unpack_from(value), -1)
    return TICK_SIZE, _TICK.unpack_from(value)


def decode_quote_record(value: bytes) -> Record:
    """The tick record of a latest-quote value, without its depth and without building a
    :class:`Tick` (readers of many quotes at once, such as the option chain, take only a few
    fields; -1 / NaN mean None as in :func:`_tick`)."""
    return _quote_record(value)[1]


def decode_quote(value: bytes) -> Tick:
    """Inverse of :func:`encode_quote`, also for values written before the trade time was carried
    (still in Redis after an upgrade until the instrument ticks again)."""
    size, rec = _quote_record(value)
    tick = _tick(rec)
    if len(value) >= size + 2:
        n_bids, n_asks = value[size], value[size + 1]
        levels = [DepthLevel(p, q, o) for p, q, o in _LEVEL.iter_unpack(value[size + 2 :])]
        tick.bids, tick.asks = tuple(levels[:n_bids]), tuple(levels[n_bids : n_bids + n_asks])
    return tick


def tick_to_json(t: Tick) -> dict[str, object]:
    """The JSON shape of a tick for the HTTP API and the browser."""
    return {
        "instrument_id": t.instrument_id,
        "exchange_ts": t.exchange_ts.isoformat(),
        "received_ts": t.received_ts.isoformat(),
        "last_price": t.last_price,
        "last_quantity": t.last_quantity,
        "volume": t.volume,
        "average_price": t.average_price,
        "open_interest": t.open_interest,
        "bid_price": t.bid_price,
        "bid_quantity": t.bid_quantity,
        "ask_price": t.ask_price,
        "ask_quantity": t.ask_quantity,
        "trade_ts": None if t.trade_ts is None else t.trade_ts.isoformat(),
        "depth": {
            "bids": [{"price": d.price, "quantity": d.quantity, "orders": d.orders} for d in t.bids],
            "asks": [{"price": d.price, "quantity": d.quantity, "orders": d.orders} for d in t.asks],
        }
        if (t.bids or t.asks)
        else None,
    }
