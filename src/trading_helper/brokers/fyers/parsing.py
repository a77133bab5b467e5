"""Fyers data socket (HSM binary protocol): bytes in, per-symbol state and ticks out. No I/O.

Why we speak the protocol ourselves instead of wrapping ``fyers_apiv3.FyersWebsocket.data_ws``
(read in published copies of fyers_apiv3 3.x): ``FyersDataSocket`` is a process-wide singleton
(``__new__`` returns the first instance and re-runs ``__init__``), runs three threads of its own
(websocket-client, a send queue, a ping loop) and calls back from them, reconnects by clearing
``symbol_token``/``scrips_per_channel`` so subscriptions are silently lost, sleeps inside
``subscribe``, swallows every exception into a log file, and in ``__response_output`` pops
``OI`` (and ``Yhigh``/``Ylow``) from symbol updates although OI is on the wire. Bridging it
would leave us a thread hand-off, a resubscribe hack and no OI. The wire format is small and
stable (the field maps and frame layouts read the same in fyers_sdk 2.1 and fyers_apiv3 3.x),
so, as for Kite, a pure parser plus an asyncio client gives one owner of the connection's
life, OI, and a parser we can fuzz.

Frames (every integer big-endian; ``len`` counts the bytes after itself)::

    request/response  [u16 len][u8 type][u8 field_count] field_count x [u8 id][u16 size][value]
    datafeed (type 6) [u16 len][u8 6][u32 message_no][u16 records] records x record
    snapshot  'S'     [u16 topic_id][u8 n][topic name][u8 count][count x i32]
                      [2 bytes unused][u16 multiplier][u8 precision] 3 x [u8 n][str]
    update    'U'     [u16 topic_id][u8 count][count x i32]   (NO_VALUE = field unchanged)
    lite      'L'     [u16 topic_id][i32 ltp]

The official client reads ``topic_id`` in native byte order in both places it meets it; it is
only a key, so reading it big-endian here changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from trading_helper.brokers.fyers import constants as C
from trading_helper.errors import LoginRequired
from trading_helper.models import DepthLevel, Tick
from trading_helper.timeframes import IST

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


# --- outgoing messages -----------------------------------------------------------------------
def _field(field_id: int, value: bytes) -> bytes:
    return bytes([field_id]) + _U16.pack(len(value)) + value


def _message(req_type: int, *fields: bytes) -> bytes:
    body = bytes([req_type, len(fields)]) + b"".join(fields)
    return _U16.pack(len(body)) + body


def auth_message(hsm_key: str, source: str = C.SOURCE) -> bytes:
    """data_ws.__access_token_msg: hsm_key, mode "P", a 1 flag, the client's name."""
    return _message(
        C.REQ_AUTH,
        _field(1, hsm_key.encode()),
        _field(2, C.AUTH_MODE.encode()),
        _field(3, b"\x01"),
        _field(4, source.encode()),
    )


def mode_message(mode: int = C.MODE_FULL, channel: int = C.CHANNEL) -> bytes:
    """data_ws.__full_mode_msg: a u64 channel bit mask and the mode byte.

    The official client writes 0 in the length prefix of this one message; we write the real
    length (the server reads the fields, not the prefix).
    """
    return _message(C.REQ_MODE, _field(1, _U64.pack(1 << channel)), _field(2, bytes([mode])))


def _scrips_blob(topics: list[str]) -> bytes:
    parts = [_U16.pack(len(topics))]
    for topic in topics:
        raw = topic.encode("ascii")
        parts.append(bytes([len(raw)]) + raw)
    return b"".join(parts)


def subscribe_message(topics: list[str], channel: int = C.CHANNEL) -> bytes:
    """data_ws.__subscription_msg (type 4): [u16 count] then [u8 len][topic] per topic."""
    return _message(C.REQ_SUBSCRIBE, _field(1, _scrips_blob(topics)), _field(2, bytes([channel])))


def unsubscribe_message(topics: list[str], channel: int = C.CHANNEL) -> bytes:
    return _message(C.REQ_UNSUBSCRIBE, _field(1, _scrips_blob(topics)), _field(2, bytes([channel])))


def ack_message(message_number: int) -> bytes:
    """data_ws.__ackowledgement_msg (type 3): the number of the last datafeed frame read."""
    return _message(C.REQ_ACK, _field(1, _U32.pack(message_number & 0xFFFFFFFF)))


# --- access token ----------------------------------------------------------------------------
def hsm_key_from_token(access_token: str, now: float | None = None) -> str:
    """The ``hsm_key`` claim of the access token (a JWT), which is what the socket authenticates.

    data_ws.access_token_to_hsmtoken decodes the payload and refuses an expired ``exp`` before
    connecting; so do we, raising LoginRequired (the message never contains the token).
    """
    token = access_token.split(":", 1)[1] if ":" in access_token else access_token
    try:
        payload_b64 = token.split(".")[1]
        payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
        hsm_key = payload["hsm_key"]
        exp = float(payload.get("exp", 0))
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise LoginRequired("the stored Fyers access token is not a valid token: log in again") from exc
    if not isinstance(hsm_key, str) or not hsm_key:
        raise LoginRequired("the stored Fyers access token has no data-socket key: log in again")
    if exp and exp <= (time.time() if now is None else now):
        raise LoginRequired("the Fyers access token has expired: run `trading-helper login fyers`")
    return hsm_key


def topic_for(symbol: str, fytoken: str, kind: str = C.TOPIC_SCRIP) -> str | None:
    """data_ws.SymbolConversion: ``sf|nse_cm|3045`` for NSE:SBIN-EQ, ``if|nse_cm|Nifty 50``
    for an index (indices have no depth topic); None for a segment the socket does not carry."""
    segment = C.FYTOKEN_SEGMENTS.get(fytoken[:4])
    if segment is None:
        return None
    if symbol.endswith("-INDEX"):
        if kind == C.TOPIC_DEPTH:
            return None
        name = C.INDEX_TOPIC_NAMES.get(symbol) or symbol.split(":", 1)[-1].rsplit("-", 1)[0]
        return f"{C.TOPIC_INDEX}|{segment}|{name}"
    return f"{kind}|{segment}|{fytoken[C.FYTOKEN_TOKEN_OFFSET :]}"


# --- incoming frames -------------------------------------------------------------------------
@dataclass(slots=True)
class TopicState:
    """What we know of one topic: raw int32 field values merged from snapshot and updates."""

    topic: str
    kind: str
    values: dict[str, int] = field(default_factory=dict)
    multiplier: int = 1
    precision: int = 2
    exchange: str = ""
    exchange_token: str = ""
    symbol: str = ""

    def price(self, name: str) -> float | None:
        raw = self.values.get(name)
        return None if raw is None else raw / (10**self.precision * self.multiplier)

    def number(self, name: str) -> int | None:
        return self.values.get(name)


@dataclass(slots=True)
class Decoded:
    """One frame, read. ``changed`` are topics whose state changed in this frame."""

    kind: int = 0
    ok: bool = False  # control responses: status "K"
    ack_interval: int = 0  # auth response field 2
    message_number: int = 0
    changed: list[TopicState] = field(default_factory=list)
    rejects: Counter[str] = field(default_factory=Counter)


class _Short(Exception):
    """The frame ended in the middle of a record."""


class HsmDecoder:
    """Decodes one connection's frames. Topic ids are the server's, per connection: use a new
    decoder for every connection. ``decode`` never raises; what it cannot read it counts."""

    def __init__(self) -> None:
        self.topics: dict[int, TopicState] = {}

    def decode(self, frame: bytes) -> Decoded:
        out = Decoded()
        try:
            if len(frame) < 3:
                raise _Short
            out.kind = frame[2]
            if out.kind == C.RESP_DATAFEED:
                self._datafeed(memoryview(frame), out)
            elif out.kind in (
                C.REQ_AUTH,
                C.REQ_SUBSCRIBE,
                C.REQ_UNSUBSCRIBE,
                C.REQ_MODE,
                C.REQ_PAUSE,
                C.REQ_RESUME,
            ):
                _control(frame, out)
        except (_Short, struct.error, IndexError, UnicodeDecodeError, ValueError):
            out.rejects["malformed_frame"] += 1
        return out

    def _datafeed(self, data: memoryview, out: Decoded) -> None:
        if len(data) < 9:
            raise _Short
        out.message_number = _U32.unpack_from(data, 3)[0]
        count = _U16.unpack_from(data, 7)[0]
        offset = 9
        changed: dict[int, TopicState] = {}
        try:
            for _ in range(count):
                kind, offset = _u8(data, offset)
                if kind == C.KIND_SNAPSHOT:
                    offset, state = self._snapshot(data, offset)
                elif kind == C.KIND_UPDATE:
                    offset, state = self._update(data, offset)
                elif kind == C.KIND_LITE:
                    offset, state = self._lite(data, offset)
                else:  # an unknown record kind: its length is unknown, the rest is unreadable
                    raise _Short
                if state is None:
                    out.rejects["unknown_instrument"] += 1
                elif state is _BAD:
                    out.rejects["malformed_frame"] += 1
                elif state is not _UNCHANGED:
                    changed[id(state)] = state
        except (_Short, struct.error):
            # keep what the records before the damage said; the rest of the frame is lost
            out.rejects["malformed_frame"] += 1
        out.changed = list(changed.values())

    def _snapshot(self, data: memoryview, offset: int) -> tuple[int, TopicState | None]:
        topic_id, offset = _u16(data, offset)
        name, offset = _str8(data, offset)
        kind = name[:2]
        names = C.FIELDS_BY_TOPIC.get(kind)
        values, offset = _ints(data, offset)
        offset += 2  # unused by the official client
        multiplier, offset = _u16(data, offset)
        precision, offset = _u8(data, offset)
        exchange, offset = _str8(data, offset)
        exchange_token, offset = _str8(data, offset)
        symbol, offset = _str8(data, offset)
        if names is None or len(values) > len(names) or multiplier == 0 or precision > 12:
            self.topics.pop(topic_id, None)  # a topic we cannot scale: drop it, skip the record
            return offset, _BAD
        state = TopicState(
            name,
            kind,
            {n: v for n, v in zip(names, values, strict=False) if v != C.NO_VALUE},
            multiplier,
            precision,
            exchange,
            exchange_token,
            symbol,
        )
        self.topics[topic_id] = state
        return offset, state

    def _update(self, data: memoryview, offset: int) -> tuple[int, TopicState | None]:
        topic_id, offset = _u16(data, offset)
        values, offset = _ints(data, offset)
        state = self.topics.get(topic_id)
        if state is None:
            return offset, None
        names = C.FIELDS_BY_TOPIC[state.kind]
        changed = False
        for name, value in zip(names, values, strict=False):
            if value != C.NO_VALUE and state.values.get(name) != value:
                state.values[name] = value
                changed = True
        return offset, state if changed else _UNCHANGED

    def _lite(self, data: memoryview, offset: int) -> tuple[int, TopicState | None]:
        topic_id, offset = _u16(data, offset)
        if offset + 4 > len(data):
            raise _Short
        value = struct.unpack_from(">i", data, offset)[0]
        state = self.topics.get(topic_id)
        if state is None:
            return offset + 4, None
        if value == C.NO_VALUE or state.values.get("ltp") == value:
            return offset + 4, _UNCHANGED
        state.values["ltp"] = value
        return offset + 4, state


#: markers returned instead of a topic: nothing changed / the record was unusable
_UNCHANGED = TopicState("", "")
_BAD = TopicState("", "")


def _u8(data: memoryview, offset: int) -> tuple[int, int]:
    if offset + 1 > len(data):
        raise _Short
    return data[offset], offset + 1


def _u16(data: memoryview, offset: int) -> tuple[int, int]:
    if offset + 2 > len(data):
        raise _Short
    return _U16.unpack_from(data, offset)[0], offset + 2


def _str8(data: memoryview, offset: int) -> tuple[str, int]:
    size, offset = _u8(data, offset)
    if offset + size > len(data):
        raise _Short
    return bytes(data[offset : offset + size]).decode("utf-8", errors="replace"), offset + size


def _ints(data: memoryview, offset: int) -> tuple[tuple[int, ...], int]:
    count, offset = _u8(data, offset)
    end = offset + 4 * count
    if end > len(data):
        raise _Short
    return struct.unpack_from(f">{count}i", data, offset), end


def _control(frame: bytes, out: Decoded) -> None:
    """A response to one of our requests: field 1 is a status string, "K" meaning accepted.
    The auth response's field 2 is the acknowledgement interval (its declared size is read,
    where the official client reads a fixed 4 bytes from a 2-byte field)."""
    data = memoryview(frame)
    count = frame[3] if len(frame) > 3 else 0
    offset = 4
    for _ in range(count):
        field_id, offset = _u8(data, offset)
        size, offset = _u16(data, offset)
        if offset + size > len(data):
            raise _Short
        value = bytes(data[offset : offset + size])
        offset += size
        if field_id == 1:
            out.ok = value == b"K"
        elif field_id == 2 and out.kind == C.REQ_AUTH and 0 < size <= 8:
            out.ack_interval = int.from_bytes(value, "big")


# --- to our model ----------------------------------------------------------------------------
def epoch_to_ist(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=IST)


def state_to_tick(state: TopicState, instrument_id: int, received_ts: datetime) -> Tick | None:
    """The tick a scrip or index topic's merged state stands for; None without a last price.

    The exchange time is ``exch_feed_time`` (the exchange's stamp on this update), else
    ``last_traded_time``; ``vol_traded_today`` is the day's cumulative volume, kept as is.
    ``trade_ts`` is ``last_traded_time`` (None when the topic has none, e.g. an index).
    """
    ltp = state.price("ltp")
    if ltp is None or state.kind == C.TOPIC_DEPTH:
        return None
    stamp = state.number("exch_feed_time") or state.number("last_traded_time")
    exchange_ts = epoch_to_ist(stamp) if stamp and stamp > 0 else received_ts
    traded = state.number("last_traded_time")
    return Tick(
        instrument_id=instrument_id,
        exchange_ts=exchange_ts,
        received_ts=received_ts,
        last_price=ltp,
        last_quantity=state.number("last_traded_qty"),
        volume=state.number("vol_traded_today"),
        average_price=state.price("avg_trade_price"),
        open_interest=state.number("OI"),
        bid_price=state.price("bid_price"),
        bid_quantity=state.number("bid_size"),
        ask_price=state.price("ask_price"),
        ask_quantity=state.number("ask_size"),
        trade_ts=epoch_to_ist(traded) if traded and traded > 0 else None,
    )


def depth_levels(state: TopicState) -> tuple[tuple[DepthLevel, ...], tuple[DepthLevel, ...]]:
    """Five bid and five ask levels of a "dp" topic (levels with no price are left out)."""
    sides = []
    for side in ("bid", "ask"):
        levels = []
        for i in range(1, 6):
            price = state.price(f"{side}_price{i}")
            if price is not None:
                levels.append(
                    DepthLevel(
                        price, state.number(f"{side}_size{i}") or 0, state.number(f"{side}_order{i}") or 0
                    )
                )
        sides.append(tuple(levels))
    return sides[0], sides[1]
