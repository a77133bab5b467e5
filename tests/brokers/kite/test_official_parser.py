"""Our Kite parser against the official one (pykiteconnect ``KiteTicker._parse_binary``), fed the
same random frames of every segment and every packet layout.

The official parser is driven offline: ``KiteTicker("k", "t")`` builds the client without
connecting, and ``_parse_binary`` is a pure function of the bytes. Where ours differs on purpose,
the comparison below says so and checks the difference itself:

- prices are signed int32 in ours (Kite documents int32; an MCX spread can be negative), unsigned
  in theirs: equal below 2**31, ours is theirs minus 2**32/divisor above;
- times: theirs are naive host-local datetimes (``datetime.fromtimestamp``), ours epoch seconds on
  the packet and IST-aware datetimes on the tick: compared as the same instant;
- ``change``: theirs is a percentage they compute from last price and close; ours keeps the field
  the index packets carry (absolute change, as sent) and computes nothing for other packets;
- depth: theirs lists all 10 entries; ours too on the packet, and the tick drops all-zero levels
  ("no order").
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kiteconnect import KiteTicker

from trading_helper.brokers.kite import constants as c
from trading_helper.brokers.kite.parsing import KitePacket, kite_frame_to_packets, kite_packet_to_tick

OFFICIAL = KiteTicker("k", "t")
#: every segment the official client names (EXCHANGE_MAP), plus ones it does not
SEGMENTS = [*sorted(set(OFFICIAL.EXCHANGE_MAP.values())), 0, 10, 11, 13, 200, 255]
LENGTHS = (c.PACKET_LTP, c.PACKET_INDEX_QUOTE, c.PACKET_INDEX_FULL, c.PACKET_QUOTE, c.PACKET_FULL)
U32 = st.integers(0, 2**32 - 1)
#: prices mostly in a realistic range, sometimes anywhere in uint32 (the sign bit set included)
PRICE = st.one_of(st.integers(0, 10**9), U32)
#: times from 1970 to 2106: the whole uint32 range both parsers read
EPOCH = st.one_of(st.integers(1_600_000_000, 1_900_000_000), U32)


@st.composite
def packets(draw: st.DrawFn, lengths: tuple[int, ...] = LENGTHS) -> bytes:
    token = (draw(st.integers(0, 2**24 - 1)) << 8) | draw(st.sampled_from(SEGMENTS))
    length = draw(st.sampled_from(lengths))
    words = [token]
    if length == c.PACKET_LTP:
        words += [draw(PRICE)]
    elif length in (c.PACKET_INDEX_QUOTE, c.PACKET_INDEX_FULL):
        words += [draw(PRICE) for _ in range(6)]
        if length == c.PACKET_INDEX_FULL:
            words += [draw(EPOCH)]
    else:
        # ltp, ltq, atp, volume, buy qty, sell qty, open, high, low, close
        words += [draw(PRICE), draw(U32), draw(PRICE), draw(U32), draw(U32), draw(U32)]
        words += [draw(PRICE) for _ in range(4)]
        if length == c.PACKET_FULL:
            words += [draw(EPOCH), draw(U32), draw(U32), draw(U32), draw(EPOCH)]
    body = struct.pack(f">{len(words)}I", *words)
    if length == c.PACKET_FULL:
        for _ in range(2 * c.DEPTH_LEVELS):
            empty = draw(st.booleans())  # Kite pads missing levels with zeros
            qty, price, orders = (
                (0, 0, 0) if empty else (draw(U32), draw(PRICE), draw(st.integers(0, 2**16 - 1)))
            )
            body += struct.pack(">IIH", qty, price, orders) + draw(st.binary(min_size=2, max_size=2))
    assert len(body) == length
    return body


def frame_of(items: list[bytes]) -> bytes:
    return struct.pack(">H", len(items)) + b"".join(struct.pack(">H", len(p)) + p for p in items)


def signed(raw_over_divisor: float, divisor: float) -> float:
    """Their unsigned reading of a price -> ours (signed int32): the documented difference."""
    raw = round(raw_over_divisor * divisor)
    return (raw - 2**32 if raw >= 2**31 else raw) / divisor


def same_instant(ours_epoch: int | None, theirs: datetime | None) -> None:
    assert theirs is not None and ours_epoch is not None
    assert theirs.tzinfo is None  # theirs is naive host-local ...
    assert datetime.fromtimestamp(ours_epoch) == theirs  # ... the same instant as our epoch


def compare(ours: KitePacket, theirs: dict[str, Any]) -> None:
    div = c.price_divisor(ours.instrument_token)
    assert theirs["instrument_token"] == ours.instrument_token
    assert theirs["mode"] == ours.mode and theirs["tradable"] is ours.tradable

    def price(ours_value: float | None, theirs_value: float) -> None:
        assert ours_value == signed(theirs_value, div)

    price(ours.last_price, theirs["last_price"])
    if ours.mode == c.MODE_LTP:
        assert set(theirs) == {"tradable", "mode", "instrument_token", "last_price"}
        return
    ohlc = theirs["ohlc"]
    for name in ("open", "high", "low", "close"):
        price(getattr(ours, name), ohlc[name])
    # theirs: a percentage computed from ltp and close; ours: the index packet's own field (or none)
    assert "change" in theirs
    if ours.volume_traded is None:  # an index packet
        assert ours.change is not None and ours.last_traded_quantity is None
        if ours.mode == c.MODE_FULL:
            same_instant(ours.exchange_timestamp, theirs["exchange_timestamp"])
        return
    assert ours.change is None
    assert ours.last_traded_quantity == theirs["last_traded_quantity"]
    price(ours.average_traded_price, theirs["average_traded_price"])
    assert ours.volume_traded == theirs["volume_traded"]  # unsigned in both: a day's volume passes 2**31
    assert ours.total_buy_quantity == theirs["total_buy_quantity"]
    assert ours.total_sell_quantity == theirs["total_sell_quantity"]
    if ours.mode == c.MODE_QUOTE:
        return
    same_instant(ours.last_trade_time, theirs["last_trade_time"])
    same_instant(ours.exchange_timestamp, theirs["exchange_timestamp"])
    assert (ours.oi, ours.oi_day_high, ours.oi_day_low) == (
        theirs["oi"],
        theirs["oi_day_high"],
        theirs["oi_day_low"],
    )
    for side, entries in (("buy", ours.depth_buy), ("sell", ours.depth_sell)):
        assert len(entries) == len(theirs["depth"][side]) == c.DEPTH_LEVELS
        for mine, official in zip(entries, theirs["depth"][side], strict=True):
            assert (mine.quantity, mine.orders) == (official["quantity"], official["orders"])
            price(mine.price, official["price"])


def compare_tick(ours: KitePacket, theirs: dict[str, Any]) -> None:
    """Our Tick carries the official values (signed prices, aware times, no empty depth levels)."""
    received = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
    tick = kite_packet_to_tick(ours, 1, received)
    assert tick.last_price == ours.last_price
    assert tick.volume == theirs.get("volume_traded") and tick.open_interest == theirs.get("oi")
    assert tick.last_quantity == theirs.get("last_traded_quantity")
    if ours.exchange_timestamp:
        assert tick.exchange_ts.tzinfo is not None
        assert tick.exchange_ts.timestamp() == theirs["exchange_timestamp"].timestamp()
    else:  # ltp/quote packets (or a zero time) carry no exchange time: the receive time stands in
        assert tick.exchange_ts == received
    if ours.last_trade_time:
        assert (
            tick.trade_ts is not None and tick.trade_ts.timestamp() == theirs["last_trade_time"].timestamp()
        )
    else:
        assert tick.trade_ts is None
    depth = theirs.get("depth", {"buy": [], "sell": []})
    for side, levels in (("buy", tick.bids), ("sell", tick.asks)):
        official = [e for e in depth[side] if e["quantity"] or e["price"]]
        assert [(lv.quantity, lv.orders) for lv in levels] == [(e["quantity"], e["orders"]) for e in official]


@settings(max_examples=300, deadline=None)
@given(st.lists(packets(), min_size=0, max_size=8))
def test_every_segment_and_mode_agrees_with_the_official_parser(items: list[bytes]) -> None:
    data = frame_of(items)
    theirs = OFFICIAL._parse_binary(data)
    ours = kite_frame_to_packets(data)
    assert not ours.rejects
    assert len(ours.packets) == len(theirs) == len(items)
    for mine, official in zip(ours.packets, theirs, strict=True):
        compare(mine, official)
        compare_tick(mine, official)


def test_heartbeats_are_empty_in_both() -> None:
    for beat in (b"", b"\x00"):
        assert OFFICIAL._parse_binary(beat) == []
        result = kite_frame_to_packets(beat)
        assert result.heartbeat and not result.packets and not result.rejects


def test_nco_is_divided_by_10000_in_both() -> None:
    token = (1234 << 8) | c.SEGMENT_NCO
    data = frame_of([struct.pack(">II", token, 65432100)])
    (theirs,) = OFFICIAL._parse_binary(data)
    (ours,) = kite_frame_to_packets(data).packets
    assert theirs["last_price"] == ours.last_price == 6543.21
