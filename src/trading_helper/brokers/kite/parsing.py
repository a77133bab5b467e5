"""Kite ticker frames -> Kite packets -> our ticks. Pure functions on bytes, no I/O.

A binary frame is, big-endian (pykiteconnect ``_split_packets``, gokiteconnect ``splitPackets``)::

    uint16 number_of_packets, then per packet: uint16 length, <length bytes of packet>

and a frame shorter than 2 bytes (Kite sends 1 byte about once a second) is a heartbeat.
Packet layouts, by length (kite.trade/docs/connect/v3/websocket, "Message structure")::

    8    ltp          token, last_price
    28   index quote  token, last_price, high, low, open, close, price change
    32   index full   ... the 28 above, then exchange_timestamp
    44   quote        token, last_price, last_traded_quantity, average_traded_price,
                      volume_traded, total_buy_quantity, total_sell_quantity, open, high, low, close
    184  full         ... the 44 above, then last_trade_time, oi, oi_day_high, oi_day_low,
                      exchange_timestamp (bytes 44-64), then 5 bid and 5 offer depth levels of
                      12 bytes: quantity, price, orders (int16), 2 bytes padding

Every field is 4 bytes unless noted. Prices are read as signed int32 (the documented type: a
commodity price can go negative), quantities and times as unsigned (as both official clients do:
a day's volume can pass 2**31). Timestamps are epoch seconds; the official client turns them into
naive host-local datetimes, we attach the zone. The parser never raises: what it cannot read it
counts under a reject reason and skips, keeping the good packets of the same frame.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from trading_helper.brokers.kite import constants as c
from trading_helper.models import DepthLevel, Tick
from trading_helper.timeframes import IST

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_LTP = struct.Struct(">Ii")
_INDEX = struct.Struct(">Iiiiiii")
_QUOTE = struct.Struct(">IiIiIIIiiii")
#: a whole full packet in one call: the quote fields, bytes 44-64, then the 10 depth levels
_FULL = struct.Struct(">IiIiIIIiiii" + "IIIII" + "IiH2x" * (2 * c.DEPTH_LEVELS))


class KiteDepthEntry(NamedTuple):
    """One depth level as sent (immutable; a named tuple, built several times cheaper than a
    frozen dataclass, ten per full packet)."""

    quantity: int
    price: float
    orders: int


class KitePacket(NamedTuple):
    """One packet with Kite's own field names (``ohlc`` flattened); prices already divided.

    ``volume_traded`` is the cumulative volume of the day, not the last trade's. Epoch-second
    times stay integers here (``None`` when the mode does not carry them); :func:`kite_packet_to_tick`
    turns them into aware datetimes.

    A named tuple (immutable, compared field by field, as the frozen dataclass it was): built for
    every packet, 21 fields, it costs a tenth of the frozen dataclass's construction (6.9 us a
    packet on the project's machine, a sixth of a full packet's whole parse and conversion).
    """

    instrument_token: int
    mode: str
    tradable: bool
    last_price: float
    last_traded_quantity: int | None = None
    average_traded_price: float | None = None
    volume_traded: int | None = None
    total_buy_quantity: int | None = None
    total_sell_quantity: int | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    #: index packets only: last price minus previous close, as sent
    change: float | None = None
    last_trade_time: int | None = None
    oi: int | None = None
    oi_day_high: int | None = None
    oi_day_low: int | None = None
    exchange_timestamp: int | None = None
    depth_buy: tuple[KiteDepthEntry, ...] = ()
    depth_sell: tuple[KiteDepthEntry, ...] = ()


@dataclass(slots=True)
class ParseResult:
    packets: list[KitePacket] = field(default_factory=list)
    #: reason -> how many packets/frames were rejected for it
    rejects: Counter[str] = field(default_factory=Counter)
    heartbeat: bool = False


@dataclass(slots=True, frozen=True)
class KiteTextMessage:
    """A text frame: ``{"type": "order", "data": {...}}``, ``{"type": "error", "data": "..."}`` ..."""

    type: str
    data: Any = None


def kite_frame_to_packets(data: bytes) -> ParseResult:
    """Split and parse one binary frame. Never raises; see the module docstring for the layout."""
    result = ParseResult()
    try:
        _split(bytes(data), result)
    except Exception:  # a layout bug must cost one frame, never the feed
        result.rejects[c.REJECT_MALFORMED_FRAME] += 1
    return result


def _split(data: bytes, result: ParseResult) -> None:
    size = len(data)
    if size < 2:
        result.heartbeat = True
        return
    (count,) = _U16.unpack_from(data, 0)
    pos = 2
    for _ in range(count):
        if pos + 2 > size:
            result.rejects[c.REJECT_TRUNCATED_PACKET] += 1
            return
        (length,) = _U16.unpack_from(data, pos)
        pos += 2
        if pos + length > size:
            result.rejects[c.REJECT_TRUNCATED_PACKET] += 1
            return
        packet = parse_packet(data, pos, length)
        if packet is None:
            result.rejects[c.REJECT_UNKNOWN_PACKET_LENGTH] += 1
        else:
            result.packets.append(packet)
        pos += length
    if pos != size:  # bytes after the announced packets: the count and the frame disagree
        result.rejects[c.REJECT_MALFORMED_FRAME] += 1


def parse_packet(buf: bytes, off: int, length: int) -> KitePacket | None:
    if length not in c.PACKET_LENGTHS:
        return None
    (token,) = _U32.unpack_from(buf, off)
    div = c.price_divisor(token)
    tradable = (token & 0xFF) != c.SEGMENT_INDICES
    if length == c.PACKET_LTP:
        _, ltp = _LTP.unpack_from(buf, off)
        return KitePacket(token, c.MODE_LTP, tradable, ltp / div)
    if length in (c.PACKET_INDEX_QUOTE, c.PACKET_INDEX_FULL):
        _, ltp, high, low, open_, close, change = _INDEX.unpack_from(buf, off)
        ts = None
        if length == c.PACKET_INDEX_FULL:
            (ts,) = _U32.unpack_from(buf, off + 28)
        return KitePacket(
            token,
            c.MODE_FULL if ts is not None else c.MODE_QUOTE,
            tradable,
            ltp / div,
            open=open_ / div,
            high=high / div,
            low=low / div,
            close=close / div,
            change=change / div,
            exchange_timestamp=ts,
        )
    if length == c.PACKET_QUOTE:
        _, ltp, ltq, atp, volume, buy_qty, sell_qty, open_, high, low, close = _QUOTE.unpack_from(buf, off)
        return KitePacket(
            token,
            c.MODE_QUOTE,
            tradable,
            ltp / div,
            last_traded_quantity=ltq,
            average_traded_price=atp / div,
            volume_traded=volume,
            total_buy_quantity=buy_qty,
            total_sell_quantity=sell_qty,
            open=open_ / div,
            high=high / div,
            low=low / div,
            close=close / div,
        )
    # the hot path (a full chain is thousands of these a second): one unpack, one object per level
    fields = _FULL.unpack_from(buf, off)
    new_entry = _new_entry
    levels = [new_entry(KiteDepthEntry, (fields[i], fields[i + 1] / div, fields[i + 2])) for i in _LEVEL_AT]
    return KitePacket(
        token,
        c.MODE_FULL,
        tradable,
        fields[1] / div,
        fields[2],
        fields[3] / div,
        fields[4],
        fields[5],
        fields[6],
        fields[7] / div,
        fields[8] / div,
        fields[9] / div,
        fields[10] / div,
        None,
        fields[11],
        fields[12],
        fields[13],
        fields[14],
        fields[15],
        tuple(levels[: c.DEPTH_LEVELS]),
        tuple(levels[c.DEPTH_LEVELS :]),
    )


#: where each depth level's (quantity, price, orders) starts among a full packet's fields
_LEVEL_AT = range(16, 16 + 3 * 2 * c.DEPTH_LEVELS, 3)
_new_entry = tuple.__new__


def epoch_to_datetime(seconds: int | None) -> datetime | None:
    """Epoch seconds -> an aware datetime in IST; ``None`` (or 0, "not sent") -> ``None``."""
    if not seconds:
        return None
    global _last_stamp
    last = _last_stamp
    if last[0] == seconds:  # a frame's packets mostly share their second: one object for them
        return last[1]
    try:
        stamp = datetime.fromtimestamp(seconds, tz=IST)
    except (OverflowError, OSError, ValueError):
        return None
    _last_stamp = (seconds, stamp)
    return stamp


#: the last second converted and its datetime (immutable, so sharing it between ticks is safe;
#: the receiver's encoder then converts it once per frame too)
_last_stamp: tuple[int, datetime | None] = (0, None)


def _depth(entries: tuple[KiteDepthEntry, ...]) -> tuple[DepthLevel, ...]:
    # Kite fills missing levels with zeros; an all-zero level is "no order", not a price of 0.
    new = _new_entry
    return tuple([new(DepthLevel, (p, q, o)) for q, p, o in entries if q or p])


def kite_packet_to_tick(packet: KitePacket, instrument_id: int, received_ts: datetime) -> Tick:
    """The one conversion from Kite's packet to our :class:`Tick`.

    ltp and quote packets carry no exchange time: the receive time stands in for it. Only full
    packets carry ``last_trade_time`` (``trade_ts``); it is None otherwise.
    """
    bids = _depth(packet.depth_buy)
    asks = _depth(packet.depth_sell)
    # positional, in Tick's field order (a third of the keyword call's cost, once per tick)
    return Tick(
        instrument_id,
        epoch_to_datetime(packet.exchange_timestamp) or received_ts,
        received_ts,
        packet.last_price,
        packet.last_traded_quantity,
        packet.volume_traded,
        packet.average_traded_price,
        packet.oi,
        bids[0].price if bids else None,
        bids[0].quantity if bids else None,
        asks[0].price if asks else None,
        asks[0].quantity if asks else None,
        bids,
        asks,
        epoch_to_datetime(packet.last_trade_time) if packet.last_trade_time else None,
    )


def kite_text_to_message(payload: str | bytes) -> KiteTextMessage | None:
    """Parse a text frame; ``None`` when it is not a JSON object with a string ``type``."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return None
    return KiteTextMessage(obj["type"], obj.get("data"))
