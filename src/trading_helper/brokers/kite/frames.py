"""A Kite binary frame straight to the receiver's records and quote values, with numpy.

The scalar path (:mod:`.parsing`: a :class:`~.parsing.KitePacket`, then a :class:`Tick` with
its ten depth levels) cost a collector about 30 us a tick, most of a 2-core machine's time at
24,000 ticks/s. Here a frame's full-mode packets (184 bytes, the mode an option chain is
followed in) are read as one numpy array of Kite's big-endian layout and turned into rows of
:func:`~trading_helper.ingest.frames.quote_dtype` in a few array operations, whatever the
frame's size; the other packets (ltp, quote, index: a few a frame) take the scalar path. The
result is byte for byte what the scalar path and :mod:`~trading_helper.ingest.codec` give
(tested on random frames, and against the official client), and its ticks, when a sink asks for
them, are the scalar path's.

Why by hand: numpy is the library; no maintained package reads Kite's frames into arrays.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from trading_helper.brokers.kite import constants as c
from trading_helper.brokers.kite.parsing import kite_packet_to_tick, parse_packet
from trading_helper.ingest.codec import tick_record
from trading_helper.ingest.frames import RowFrame, quote_dtype
from trading_helper.ingest.volume import to_us
from trading_helper.models import Tick

_LEVELS = 2 * c.DEPTH_LEVELS
ROW_DTYPE = quote_dtype(_LEVELS)
#: a full packet as Kite lays it out (big-endian; prices signed, as :mod:`.parsing` reads them)
FULL_DTYPE = np.dtype(
    [
        ("token", ">u4"),
        ("ltp", ">i4"),
        ("ltq", ">u4"),
        ("atp", ">i4"),
        ("vol", ">u4"),
        ("buy", ">u4"),
        ("sell", ">u4"),
        ("ohlc", ">i4", (4,)),
        ("ltt", ">u4"),
        ("oi", ">u4"),
        ("oi_high", ">u4"),
        ("oi_low", ">u4"),
        ("ts", ">u4"),
        ("depth", [("q", ">u4"), ("p", ">i4"), ("o", ">u2"), ("pad", "V2")], (_LEVELS,)),
    ]
)
assert FULL_DTYPE.itemsize == c.PACKET_FULL
#: price divisor by segment (the token's low byte)
_DIVISORS = np.array([c.price_divisor(segment) for segment in range(256)], np.float64)
#: sorting a packet's levels by (empty, side) puts bids, then asks, then empty levels
_SIDE = np.repeat(np.arange(2), c.DEPTH_LEVELS)
_STRIDE = 2 + c.PACKET_FULL


@dataclass(slots=True)
class KiteFrame:
    """What :func:`parse_frame` made of one binary frame."""

    #: the ticks of known instruments (empty for a heartbeat or a frame of nothing usable)
    ticks: RowFrame | list[Tick] = field(default_factory=list)
    rejects: Counter[str] = field(default_factory=Counter)
    #: packets of tokens not in the map (e.g. in flight when they were unsubscribed)
    unknown: int = 0


def parse_frame(data: bytes, ids: dict[int, int], received: datetime) -> KiteFrame:
    """One binary frame -> its ticks as rows. Never raises (a layout bug costs one frame)."""
    out = KiteFrame()
    try:
        _parse(bytes(data), ids, received, out)
    except Exception:
        out.ticks, out.unknown = [], 0
        out.rejects[c.REJECT_MALFORMED_FRAME] += 1
    return out


def _parse(data: bytes, ids: dict[int, int], received: datetime, out: KiteFrame) -> None:
    packets = _packets(data, out.rejects)
    if packets is None:
        return
    offsets, lengths = packets
    raw = np.frombuffer(data, np.uint8)
    tokens = raw[offsets[:, None] + np.arange(4)].view(">u4").ravel() if len(offsets) else np.zeros(0, ">u4")
    iids = [ids.get(t) for t in tokens.tolist()]
    kept_ids = [iid for iid in iids if iid is not None]
    out.unknown = len(iids) - len(kept_ids)
    if not kept_ids:
        return
    if out.unknown:
        keep = [i for i, iid in enumerate(iids) if iid is not None]
        offsets, lengths = offsets[keep], lengths[keep]
    rows = np.zeros(len(kept_ids), ROW_DTYPE)
    rx = to_us(received)
    full = lengths == c.PACKET_FULL
    if full.all():
        _full_rows(rows, _gather(raw, offsets), kept_ids, rx)
    else:
        at = np.flatnonzero(full)
        part = np.zeros(len(at), ROW_DTYPE)
        _full_rows(part, _gather(raw, offsets[at]), [kept_ids[i] for i in at.tolist()], rx)
        rows[at] = part
        for i in np.flatnonzero(~full).tolist():
            rows["rec"][i] = tick_record(_tick(data, int(offsets[i]), int(lengths[i]), kept_ids[i], received))

    def ticks() -> list[Tick]:  # the scalar path's, when a sink reads the frame as ticks
        spans = zip(offsets.tolist(), lengths.tolist(), kept_ids, strict=True)
        return [_tick(data, off, length, iid, received) for off, length, iid in spans]

    out.ticks = RowFrame(rows, kept_ids, ticks)


def _tick(data: bytes, off: int, length: int, iid: int, received: datetime) -> Tick:
    packet = parse_packet(data, off, length)
    assert packet is not None  # its length was checked
    return kite_packet_to_tick(packet, iid, received)


def _packets(data: bytes, rejects: Counter[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(offsets, lengths) of the frame's packets of known lengths; None for a heartbeat.
    Rejects counted as :func:`.parsing.kite_frame_to_packets` counts them."""
    size = len(data)
    if size < 2:
        return None
    count = int.from_bytes(data[:2], "big")
    if count and size == 2 + count * _STRIDE:  # the usual frame: full packets only, one stride
        lengths = np.ndarray((count,), ">u2", data, 2, (_STRIDE,))
        if (lengths == c.PACKET_FULL).all():
            return np.arange(count, dtype=np.int64) * _STRIDE + 4, lengths.astype(np.int64)
    offsets: list[int] = []
    found: list[int] = []
    pos = 2
    for _ in range(count):
        if pos + 2 > size:
            rejects[c.REJECT_TRUNCATED_PACKET] += 1
            break
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + length > size:
            rejects[c.REJECT_TRUNCATED_PACKET] += 1
            break
        if length in c.PACKET_LENGTHS:
            offsets.append(pos)
            found.append(length)
        else:
            rejects[c.REJECT_UNKNOWN_PACKET_LENGTH] += 1
        pos += length
    else:
        if pos != size:
            rejects[c.REJECT_MALFORMED_FRAME] += 1
    return np.asarray(offsets, np.int64), np.asarray(found, np.int64)


def _gather(raw: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The full packets at ``offsets`` as one array of :data:`FULL_DTYPE`."""
    return raw[offsets[:, None] + np.arange(c.PACKET_FULL)].view(FULL_DTYPE).ravel()


def _full_rows(rows: np.ndarray, p: np.ndarray, iids: list[int], rx: int) -> None:
    """Rows for full packets ``p``, as :func:`.parsing.kite_packet_to_tick` and
    :func:`~trading_helper.ingest.codec.encode_quote` would make them."""
    div = _DIVISORS[p["token"] & 0xFF]
    rec = rows["rec"]
    ts = p["ts"].astype(np.int64)
    rec["ex"] = np.where(ts != 0, ts * 1_000_000, rx)  # no exchange time: the receive time stands in
    rec["rx"] = rx
    rec["iid"] = iids
    rec["ltp"] = p["ltp"] / div
    rec["qty"] = p["ltq"]
    rec["vol"] = p["vol"]
    rec["avg"] = p["atp"] / div
    rec["oi"] = p["oi"]
    ltt = p["ltt"].astype(np.int64)
    rec["tr"] = np.where(ltt != 0, ltt * 1_000_000, -1)
    # depth: an all-zero level is "no order" and is dropped; the rest keep their order, bids first
    depth = p["depth"]
    q, price = depth["q"].astype(np.int64), depth["p"].astype(np.int64)
    empty = (q == 0) & (price == 0)
    order = np.argsort(_SIDE + 2 * empty, axis=1, kind="stable")
    nb = (~empty[:, : c.DEPTH_LEVELS]).sum(axis=1)
    na = (~empty[:, c.DEPTH_LEVELS :]).sum(axis=1)
    rows["nb"], rows["na"] = nb, na
    lv = rows["lv"]
    lv["p"] = np.take_along_axis(price, order, axis=1) / div[:, None]
    lv["q"] = np.take_along_axis(q, order, axis=1)
    lv["o"] = np.take_along_axis(depth["o"].astype(np.int32), order, axis=1)
    first_ask = np.minimum(nb, _LEVELS - 1)[:, None]
    best_bid_p, best_bid_q = lv["p"][:, 0], lv["q"][:, 0]
    best_ask_p = np.take_along_axis(lv["p"], first_ask, axis=1)[:, 0]
    best_ask_q = np.take_along_axis(lv["q"], first_ask, axis=1)[:, 0]
    rec["bp"] = np.where(nb > 0, best_bid_p, np.nan)
    rec["bq"] = np.where(nb > 0, best_bid_q, -1)
    rec["ap"] = np.where(na > 0, best_ask_p, np.nan)
    rec["aq"] = np.where(na > 0, best_ask_q, -1)
