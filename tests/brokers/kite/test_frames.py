"""The numpy frame path (``brokers/kite/frames.py``) against the scalar one and the official client.

The scalar path is parsing.py's packets, then ``kite_packet_to_tick``, then the codec's records
and quote values; the numpy path must give the same bytes for every frame, the same rejects for
broken ones, and the same ticks when a sink reads the frame as ticks. The official client
(pykiteconnect's ``_parse_binary``) reads the same bytes: our quote values, decoded, carry its
values (with the documented differences of test_official_parser.py).
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.brokers.kite.test_official_parser import OFFICIAL, frame_of, packets, signed
from tests.fakes.kite_server import pack_frame, pack_packet, sample_quote
from trading_helper.brokers.kite import constants as c
from trading_helper.brokers.kite.frames import parse_frame
from trading_helper.brokers.kite.parsing import kite_frame_to_packets, kite_packet_to_tick
from trading_helper.ingest.codec import decode_quote, decode_ticks, encode_quote, encode_ticks
from trading_helper.ingest.frames import EncodedFrame

RECEIVED = datetime(2026, 12, 1, 4, 0, 0, 123456, tzinfo=UTC)


def scalar(data: bytes, ids: dict[int, int]) -> tuple[list, object, int]:
    """(ticks, rejects, unknown) as the scalar path makes them."""
    result = kite_frame_to_packets(data)
    known = [p for p in result.packets if p.instrument_token in ids]
    ticks = [kite_packet_to_tick(p, ids[p.instrument_token], RECEIVED) for p in known]
    return ticks, result.rejects, len(result.packets) - len(known)


def check_same(data: bytes, ids: dict[int, int]) -> EncodedFrame | None:
    ticks, rejects, unknown = scalar(data, ids)
    parsed = parse_frame(data, ids, RECEIVED)
    assert parsed.rejects == rejects
    assert parsed.unknown == unknown
    assert len(parsed.ticks) == len(ticks)
    if not ticks:
        assert not parsed.ticks
        return None
    frame = parsed.ticks
    assert isinstance(frame, EncodedFrame)
    assert frame.payload == encode_ticks(ticks)
    assert frame.instrument_ids == [t.instrument_id for t in ticks]
    assert [frame.quote(i) for i in range(len(ticks))] == [encode_quote(t) for t in ticks]
    assert frame.newest() == max(t.exchange_ts for t in ticks)
    assert list(frame) == ticks and frame[-1] == ticks[-1]
    return frame


@st.composite
def frames_and_ids(draw: st.DrawFn, max_size: int = 12) -> tuple[bytes, dict[int, int]]:
    items = draw(st.lists(packets(), max_size=max_size))
    tokens = [struct.unpack_from(">I", p)[0] for p in items]
    # some tokens unknown (unsubscribed while in flight), the rest mapped to our ids
    ids = {t: 1000 + i for i, t in enumerate(tokens) if draw(st.integers(0, 4))}
    return frame_of(items), ids


@settings(max_examples=400, deadline=None)
@given(frames_and_ids())
def test_every_layout_gives_the_scalar_paths_bytes_and_ticks(case: tuple[bytes, dict[int, int]]) -> None:
    check_same(*case)


@settings(max_examples=150, deadline=None)
@given(st.lists(packets(lengths=(c.PACKET_FULL,)), min_size=1, max_size=40))
def test_frames_of_full_packets_only_take_the_one_stride_path(items: list[bytes]) -> None:
    ids = {struct.unpack_from(">I", p)[0]: 7 for p in items}
    check_same(frame_of(items), ids)


@settings(max_examples=300, deadline=None)
@given(frames_and_ids(max_size=6), st.data())
def test_broken_frames_are_rejected_as_the_scalar_path_rejects_them(
    case: tuple[bytes, dict[int, int]], data: st.DataObject
) -> None:
    frame, ids = case
    how = data.draw(st.sampled_from(["truncate", "trail", "length", "count", "noise"]))
    if how == "truncate" and len(frame) > 2:
        frame = frame[: data.draw(st.integers(2, len(frame) - 1))]
    elif how == "trail":
        frame += data.draw(st.binary(min_size=1, max_size=30))
    elif how == "length" and len(frame) > 4:
        frame = frame[:2] + struct.pack(">H", data.draw(st.integers(0, 400))) + frame[4:]
    elif how == "count":
        frame = struct.pack(">H", data.draw(st.integers(0, 2**16 - 1))) + frame[2:]
    else:
        frame = data.draw(st.binary(max_size=400))
    check_same(frame, ids)


def test_heartbeats_are_empty() -> None:
    for beat in (b"", b"\x00"):
        parsed = parse_frame(beat, {}, RECEIVED)
        assert not parsed.ticks and not parsed.rejects and not parsed.unknown


def test_a_large_frame_from_the_fake_server_and_a_zero_exchange_time() -> None:
    tokens = [(i << 8) | c.SEGMENT_NFO for i in range(1, 2001)]
    items = [pack_packet(sample_quote(t, 5), c.MODE_FULL) for t in tokens]
    # the receive time stands in for a packet without an exchange time
    items[3] = items[3][:60] + bytes(4) + items[3][64:]
    frame = check_same(pack_frame(items), {t: i for i, t in enumerate(tokens)})
    assert frame is not None and len(frame) == 2000
    assert decode_ticks(frame.payload)[3].exchange_ts == RECEIVED


@settings(max_examples=200, deadline=None)
@given(st.lists(packets(), min_size=1, max_size=8))
def test_quote_values_carry_what_the_official_client_reads(items: list[bytes]) -> None:
    data = frame_of(items)
    theirs = OFFICIAL._parse_binary(data)
    tokens = [p["instrument_token"] for p in theirs]
    frame = parse_frame(data, {t: i for i, t in enumerate(tokens)}, RECEIVED).ticks
    assert isinstance(frame, EncodedFrame) and len(frame) == len(theirs)
    by_id = {}  # a token twice in a frame: ids map to its last index, so compare by position
    for i, official in enumerate(theirs):
        tick = decode_quote(frame.quote(i))
        by_id[tick.instrument_id] = tick
        div = c.price_divisor(official["instrument_token"])
        assert tick.last_price == signed(official["last_price"], div)
        assert tick.volume == official.get("volume_traded")
        assert tick.open_interest == official.get("oi")
        assert tick.last_quantity == official.get("last_traded_quantity")
        # theirs reads a zero time as 1970 (naive, host-local); ours: not sent, the receive time
        if official.get("exchange_timestamp") not in (None, datetime.fromtimestamp(0)):
            assert tick.exchange_ts.timestamp() == official["exchange_timestamp"].timestamp()
        else:
            assert tick.exchange_ts == RECEIVED
        depth = official.get("depth", {"buy": [], "sell": []})
        for side, levels in (("buy", tick.bids), ("sell", tick.asks)):
            present = [e for e in depth[side] if e["quantity"] or e["price"]]
            assert [(lv.quantity, lv.orders) for lv in levels] == [
                (e["quantity"], e["orders"]) for e in present
            ]
            assert [lv.price for lv in levels] == [signed(e["price"], div) for e in present]
        if tick.bids:
            assert (tick.bid_price, tick.bid_quantity) == (tick.bids[0].price, tick.bids[0].quantity)
        else:
            assert tick.bid_price is None and tick.bid_quantity is None
        if tick.asks:
            assert (tick.ask_price, tick.ask_quantity) == (tick.asks[0].price, tick.asks[0].quantity)
        else:
            assert tick.ask_price is None and tick.ask_quantity is None
    assert by_id
