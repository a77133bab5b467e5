"""The Kite frame parser on bytes built from the documented layouts, plus fuzzing."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes.kite_server import Quote, pack_frame, pack_packet
from trading_helper.brokers.kite import constants as c
from trading_helper.brokers.kite.parsing import (
    KiteDepthEntry,
    KitePacket,
    kite_frame_to_packets,
    kite_packet_to_tick,
    kite_text_to_message,
)
from trading_helper.models import DepthLevel
from trading_helper.timeframes import IST

RESOURCES = Path(__file__).parent / "resources"
RECEIVED = datetime(2024, 1, 1, 3, 45, 2, tzinfo=UTC)
TS = 1704080700  # 2024-01-01 09:15:00 IST


def frame(*packets: bytes) -> bytes:
    """Frame header written out again here: uint16 count, then uint16 length + packet each."""
    out = struct.pack(">H", len(packets))
    for p in packets:
        out += struct.pack(">H", len(p)) + p
    return out


def test_heartbeats_are_one_byte_frames_and_are_not_rejects() -> None:
    for data in (b"\x00", b"\xff", b""):
        result = kite_frame_to_packets(data)
        assert result.heartbeat and result.packets == [] and not result.rejects


def test_ltp_packet() -> None:
    [p] = kite_frame_to_packets(frame(struct.pack(">Ii", 738561, 258035))).packets
    assert p == KitePacket(738561, "ltp", True, 2580.35)


@pytest.mark.parametrize(
    ("segment", "raw", "expected"),
    [
        (c.SEGMENT_NSE, 258035, 2580.35),
        (c.SEGMENT_NFO, 1234505, 12345.05),
        (c.SEGMENT_CDS, 831925000, 83.1925),  # NSE currency: 1e7
        (c.SEGMENT_BSE, 99, 0.99),
        (c.SEGMENT_BFO, 100, 1.0),
        (c.SEGMENT_BCD, 832075, 83.2075),  # BSE currency: 1e4
        (c.SEGMENT_MCX, 6543200, 65432.0),
        (c.SEGMENT_MCXSX, 1, 0.01),
        (c.SEGMENT_INDICES, 2173140, 21731.4),
        (c.SEGMENT_NCO, 65432100, 6543.21),  # NSE commodity: 1e4 (100x too high at 1e2)
    ],
)
def test_price_divisor_by_segment_in_the_token_low_byte(segment: int, raw: int, expected: float) -> None:
    token = (4321 << 8) | segment
    [p] = kite_frame_to_packets(frame(struct.pack(">Ii", token, raw))).packets
    assert p.last_price == pytest.approx(expected, abs=1e-9)
    assert p.tradable is (segment != c.SEGMENT_INDICES)


def test_negative_prices_are_signed() -> None:
    [p] = kite_frame_to_packets(frame(struct.pack(">Ii", (99 << 8) | c.SEGMENT_MCX, -3763))).packets
    assert p.last_price == -37.63


def test_index_quote_and_full_packets_have_their_own_field_order() -> None:
    token = 256265  # NIFTY 50, segment 9
    body = struct.pack(">Iiiiiii", token, 2173140, 2183435, 2168070, 2172775, 2171890, 1250)
    quote, full = kite_frame_to_packets(frame(body, body + struct.pack(">I", TS))).packets
    assert quote == KitePacket(
        token, "quote", False, 21731.4, open=21727.75, high=21834.35, low=21680.7, close=21718.9, change=12.5
    )
    assert full.mode == "full" and full.exchange_timestamp == TS and full.high == 21834.35


def test_quote_packet() -> None:
    body = struct.pack(
        ">IiIiIIIiiii", 738561, 258035, 3, 257990, 4_000_000_000, 1500, 2100, 257000, 259050, 256525, 256810
    )
    [p] = kite_frame_to_packets(frame(body)).packets
    assert p == KitePacket(
        738561,
        "quote",
        True,
        2580.35,
        last_traded_quantity=3,
        average_traded_price=2579.9,
        volume_traded=4_000_000_000,
        total_buy_quantity=1500,
        total_sell_quantity=2100,
        open=2570.0,
        high=2590.5,
        low=2565.25,
        close=2568.1,
    )


def test_full_packet_with_depth_skips_the_padding() -> None:
    quote = struct.pack(">IiIiIIIiiii", 12345602, 10550, 50, 10500, 9000, 100, 200, 10000, 11000, 9900, 10100)
    extra = struct.pack(">IIIII", TS - 1, 123450, 130000, 120000, TS)
    # padding filled with 0xffff on purpose: it must be ignored
    depth = b"".join(struct.pack(">IiH", 10 * (i + 1), 10545 - 5 * i, i + 1) + b"\xff\xff" for i in range(5))
    depth += b"".join(struct.pack(">IiH", 20 * (i + 1), 10555 + 5 * i, i + 2) + b"\xff\xff" for i in range(5))
    body = quote + extra + depth
    assert len(body) == c.PACKET_FULL
    [p] = kite_frame_to_packets(frame(body)).packets
    assert (p.mode, p.last_trade_time, p.oi, p.oi_day_high, p.oi_day_low, p.exchange_timestamp) == (
        "full",
        TS - 1,
        123450,
        130000,
        120000,
        TS,
    )
    assert p.depth_buy[0] == KiteDepthEntry(10, 105.45, 1)
    assert p.depth_buy[4] == KiteDepthEntry(50, 105.25, 5)
    assert p.depth_sell[0] == KiteDepthEntry(20, 105.55, 2)
    assert p.depth_sell[4] == KiteDepthEntry(100, 105.75, 6)


def test_captured_mixed_frame_resource() -> None:
    data = bytes.fromhex((RESOURCES / "frame_mixed.hex").read_text().strip())
    expected = json.loads((RESOURCES / "frame_mixed.json").read_text())["packets"]
    result = kite_frame_to_packets(data)
    assert not result.rejects and len(result.packets) == len(expected)
    for packet, want in zip(result.packets, expected, strict=True):
        for name, value in want.items():
            got = getattr(packet, name)
            if name.startswith("depth_"):
                assert [(e.quantity, e.orders) for e in got] == [(q, o) for q, _, o in value]
                assert [e.price for e in got] == pytest.approx([p for _, p, _ in value])
            elif isinstance(value, float):
                assert got == pytest.approx(value, abs=1e-9), name
            else:
                assert got == value, name


def test_truncated_packet_keeps_the_packets_before_it() -> None:
    good = struct.pack(">Ii", 738561, 100)
    data = frame(good, struct.pack(">Ii", 5633, 200) + b"\x00" * 36)[:-5]
    result = kite_frame_to_packets(data)
    assert [p.instrument_token for p in result.packets] == [738561]
    assert result.rejects == {c.REJECT_TRUNCATED_PACKET: 1}


def test_unknown_packet_length_is_skipped_and_counted() -> None:
    a, b = struct.pack(">Ii", 1, 100), struct.pack(">Ii", 2, 200)
    result = kite_frame_to_packets(frame(a, b"\x00" * 10, b))
    assert [p.instrument_token for p in result.packets] == [1, 2]
    assert result.rejects == {c.REJECT_UNKNOWN_PACKET_LENGTH: 1}


def test_trailing_bytes_are_a_malformed_frame_but_packets_survive() -> None:
    result = kite_frame_to_packets(frame(struct.pack(">Ii", 1, 100)) + b"junk")
    assert len(result.packets) == 1 and result.rejects == {c.REJECT_MALFORMED_FRAME: 1}


def test_count_header_larger_than_the_frame() -> None:
    result = kite_frame_to_packets(b"\xff\xff\x00")
    assert result.packets == [] and result.rejects == {c.REJECT_TRUNCATED_PACKET: 1}


def test_full_packet_to_tick() -> None:
    q = Quote(
        token=738561,
        last_price=2580.35,
        last_quantity=3,
        average_price=2579.9,
        volume=1234567,
        oi=17,
        last_trade_time=TS - 1,
        exchange_timestamp=TS,
        bids=[(10, 2580.3, 2)],
        asks=[(7, 2580.4, 1), (9, 2580.5, 4)],
    )
    [p] = kite_frame_to_packets(pack_frame([pack_packet(q, "full")])).packets
    tick = kite_packet_to_tick(p, 42, RECEIVED)
    assert tick.instrument_id == 42 and tick.received_ts == RECEIVED
    assert tick.exchange_ts == datetime(2024, 1, 1, 9, 15, tzinfo=IST)
    assert tick.exchange_ts.utcoffset() == timedelta(hours=5, minutes=30)
    assert (tick.last_price, tick.last_quantity, tick.volume, tick.average_price, tick.open_interest) == (
        2580.35,
        3,
        1234567,
        2579.9,
        17,
    )
    assert (tick.bid_price, tick.bid_quantity, tick.ask_price, tick.ask_quantity) == (2580.3, 10, 2580.4, 7)
    assert tick.bids == (DepthLevel(2580.3, 10, 2),)  # empty (all-zero) levels dropped
    assert tick.asks == (DepthLevel(2580.4, 7, 1), DepthLevel(2580.5, 9, 4))


@pytest.mark.parametrize("mode", ["ltp", "quote"])
def test_packets_without_exchange_time_use_the_receive_time(mode: str) -> None:
    [p] = kite_frame_to_packets(pack_frame([pack_packet(Quote(token=5633, last_price=1.5), mode)])).packets
    tick = kite_packet_to_tick(p, 7, RECEIVED)
    assert tick.exchange_ts == RECEIVED and tick.exchange_ts.tzinfo is not None
    assert tick.bids == () and tick.bid_price is None


def test_index_full_packet_to_tick_has_exchange_time_and_no_volume() -> None:
    q = Quote(token=256265, last_price=21731.4, close=21700.0, exchange_timestamp=TS)
    [p] = kite_frame_to_packets(pack_frame([pack_packet(q, "full")])).packets
    tick = kite_packet_to_tick(p, 1, RECEIVED)
    assert tick.exchange_ts.timestamp() == TS and tick.volume is None and tick.last_price == 21731.4


def test_text_messages() -> None:
    order = kite_text_to_message('{"type": "order", "data": {"order_id": "1", "status": "COMPLETE"}}')
    assert order is not None and order.type == "order" and order.data["status"] == "COMPLETE"
    error = kite_text_to_message(b'{"type": "error", "data": "Invalid token"}')
    assert error is not None and (error.type, error.data) == ("error", "Invalid token")
    for bad in ("not json", "[1, 2]", '{"data": 1}', b"\xff\xfe", "[" * 100_000):
        assert kite_text_to_message(bad) is None


# --- fuzzing ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    result = kite_frame_to_packets(data)
    assert all(isinstance(p, KitePacket) for p in result.packets)
    assert all(n > 0 for n in result.rejects.values())


packet_bodies = st.sampled_from(sorted(c.PACKET_LENGTHS)).flatmap(lambda n: st.binary(min_size=n, max_size=n))


@settings(max_examples=200, deadline=None)
@given(st.lists(packet_bodies, min_size=1, max_size=6), st.data())
def test_truncated_frames_keep_every_whole_packet_before_the_cut(
    bodies: list[bytes], data: st.DataObject
) -> None:
    whole = frame(*bodies)
    cut = data.draw(st.integers(min_value=0, max_value=len(whole)))
    result = kite_frame_to_packets(whole[:cut])
    # packets wholly inside the first ``cut`` bytes
    end, expected = 2, 0
    for body in bodies:
        end += 2 + len(body)
        if end <= cut:
            expected += 1
    assert len(result.packets) == expected
    assert [p.instrument_token for p in result.packets] == [
        struct.unpack(">I", b[:4])[0] for b in bodies[:expected]
    ]
    if cut < 2:
        assert result.heartbeat
    elif cut < len(whole):
        assert result.rejects == {c.REJECT_TRUNCATED_PACKET: 1}
    else:
        assert not result.rejects


@settings(max_examples=150, deadline=None)
@given(
    st.lists(packet_bodies, max_size=4),
    st.binary(max_size=300).filter(lambda b: len(b) not in c.PACKET_LENGTHS),
    st.lists(packet_bodies, max_size=4),
)
def test_a_bad_packet_does_not_lose_its_neighbours(
    before: list[bytes], bad: bytes, after: list[bytes]
) -> None:
    result = kite_frame_to_packets(frame(*before, bad, *after))
    assert len(result.packets) == len(before) + len(after)
    assert result.rejects == {c.REJECT_UNKNOWN_PACKET_LENGTH: 1}
