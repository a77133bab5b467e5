"""Our Fyers data-socket decoder against the official one (fyers-apiv3 3.2 ``FyersDataSocket``),
fed the same random snapshot and update frames of every topic kind (scrip, index, depth).

The official parser can be driven offline: constructing ``FyersDataSocket`` connects nothing
(it opens a log file, given a folder here); its frame dispatcher is the name-mangled private
``__response_msg`` (hence the pinned minor version), and it needs the topic -> symbol map its
``subscribe`` would have fetched over HTTP, which we fill in. It is a process-wide singleton:
one instance, its per-topic state cleared before each example.

Where ours differs on purpose, the comparison says so and checks the difference:

- OI (and the 52-week ``Yhigh``/``Ylow``) are on the wire; theirs pops them from every symbol
  update, ours keeps them (we store OI);
- ``lower_ckt``/``upper_ckt``: theirs overwrites them with 0, ours keeps what was sent;
- ``ch``/``chp``: theirs computes change and change % from ltp and previous close; ours
  computes nothing;
- an index topic whose previous close is 0 makes theirs divide by zero, swallow the error into
  its log and drop the update; ours keeps it (tested on its own below);
- theirs calls back once per record, ours reports each changed topic once per frame: compared
  as the last callback of each topic in the frame.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.fyers_server import NO_VALUE, datafeed_frame, snapshot_record, update_record
from trading_helper.brokers.fyers import constants as C
from trading_helper.brokers.fyers.parsing import HsmDecoder, TopicState, state_to_tick

with warnings.catch_warnings():  # its import of pkg_resources warns that pkg_resources is deprecated
    warnings.simplefilter("ignore")
    from fyers_apiv3.FyersWebsocket.data_ws import FyersDataSocket

#: theirs drops these from symbol updates, or overwrites them (see the module docstring)
DROPPED_BY_THEIRS = frozenset({"OI", "Yhigh", "Ylow"})
ZEROED_BY_THEIRS = frozenset({"lower_ckt", "upper_ckt"})
COMPUTED_BY_THEIRS = frozenset({"ch", "chp"})
NOT_FIELDS = frozenset({"type", "symbol"})


class Official:
    def __init__(self, log_dir: Path) -> None:
        self.messages: list[dict[str, Any]] = []
        self.socket = FyersDataSocket(
            access_token="APP-100:not.a.token",
            on_message=self.messages.append,
            log_path=str(log_dir),
            reconnect=False,
        )

    def reset(self, symbols: dict[str, str]) -> None:
        s = self.socket
        s.resp, s.scrips_sym, s.index_sym, s.dp_sym = {}, {}, {}, {}
        s.symbol_token = dict(symbols)  # topic -> symbol, as its subscribe() would have fetched
        self.messages.clear()

    def feed(self, frame: bytes) -> list[dict[str, Any]]:
        self.messages.clear()
        self.socket._FyersDataSocket__response_msg(bytearray(frame))
        return list(self.messages)


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Official]:
    yield Official(tmp_path_factory.mktemp("fyers-official-log"))
    for handler in logging.getLogger("FyersDataSocket").handlers:
        handler.close()


_RECEIVED = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
KINDS = {C.TOPIC_SCRIP: C.SCRIP_FIELDS, C.TOPIC_INDEX: C.INDEX_FIELDS, C.TOPIC_DEPTH: C.DEPTH_FIELDS}
RAW = st.one_of(st.integers(-(2**31) + 1, 2**31 - 1), st.integers(0, 10**7))


@st.composite
def session(draw: st.DrawFn) -> tuple[dict[str, str], list[bytes]]:
    """Topics, a snapshot frame of all of them, then update frames: what one socket receives."""
    count = draw(st.integers(1, 6))
    ids = draw(st.lists(st.integers(0, 2**16 - 1), min_size=count, max_size=count, unique=True))
    topics: list[tuple[int, str, str, int]] = []  # (topic id, topic, kind, field count)
    symbols: dict[str, str] = {}
    snapshots = []
    for n, topic_id in enumerate(ids):
        kind = draw(st.sampled_from(sorted(KINDS)))
        topic = f"{kind}|nse_cm|{1000 + n}" if kind != C.TOPIC_INDEX else f"if|nse_cm|Index {n}"
        symbols[topic] = f"NSE:S{n}-EQ"
        fields = KINDS[kind]
        width = draw(st.integers(1, len(fields)))
        values = [draw(st.one_of(RAW, st.just(NO_VALUE))) for _ in range(width)]
        if kind == C.TOPIC_INDEX and width > 1 and values[1] in (0, NO_VALUE):
            values[1] = draw(st.integers(1, 10**7))  # see the module docstring: theirs cannot do 0
        snapshots.append(
            snapshot_record(
                topic_id,
                topic,
                values,
                draw(st.integers(1, 100)),
                draw(st.integers(0, 6)),
                "NSE",
                str(1000 + n),
                f"S{n}",
            )
        )
        topics.append((topic_id, topic, kind, width))
    frames = [datafeed_frame(1, snapshots)]
    for number in range(2, draw(st.integers(2, 6))):
        records = []
        for topic_id, _topic, kind, width in draw(st.lists(st.sampled_from(topics), max_size=8)):
            values = [draw(st.one_of(st.just(NO_VALUE), RAW)) for _ in range(width)]
            if kind == C.TOPIC_INDEX and width > 1 and values[1] == 0:
                values[1] = NO_VALUE
            records.append(update_record(topic_id, values))
        frames.append(datafeed_frame(number, records))
    return symbols, frames


def compare(ours: TopicState, theirs: dict[str, Any]) -> None:
    prices = C.PRICE_FIELDS_BY_TOPIC[ours.kind]
    for name, value in theirs.items():
        if name in NOT_FIELDS or name in COMPUTED_BY_THEIRS:
            continue
        if name in ZEROED_BY_THEIRS:
            assert value == 0
            continue
        assert (ours.price(name) if name in prices else ours.number(name)) == value, name
    kept_only_by_us = set(ours.values) - set(theirs)
    if ours.kind == C.TOPIC_SCRIP:
        assert kept_only_by_us <= DROPPED_BY_THEIRS
        assert not DROPPED_BY_THEIRS & set(theirs)
    else:
        assert not kept_only_by_us


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(session())
def test_every_topic_kind_agrees_with_the_official_decoder(
    official: Official, case: tuple[dict[str, str], list[bytes]]
) -> None:
    symbols, frames = case
    official.reset(symbols)
    topic_of = {symbol: topic for topic, symbol in symbols.items()}
    decoder = HsmDecoder()
    for frame in frames:
        theirs = official.feed(frame)
        ours = decoder.decode(frame)
        assert not ours.rejects
        last: dict[str, dict[str, Any]] = {}
        for message in theirs:
            last[topic_of[message["symbol"]]] = message
        assert {state.topic for state in ours.changed} == set(last)
        for state in ours.changed:
            compare(state, last[state.topic])
            if state.kind != C.TOPIC_DEPTH and "ltp" in state.values:
                tick = state_to_tick(state, 1, _RECEIVED)
                assert tick is not None and tick.last_price == last[state.topic]["ltp"]
                assert tick.volume == last[state.topic].get("vol_traded_today")


def test_an_index_with_a_zero_previous_close_is_kept_by_us_and_dropped_by_theirs(official: Official) -> None:
    topic = "if|nse_cm|Nifty 50"
    official.reset({topic: "NSE:NIFTY50-INDEX"})
    frame = datafeed_frame(
        1,
        [
            snapshot_record(
                7,
                topic,
                [2_400_000, 0, 1_700_000_000, 2_410_000, 2_390_000, 2_395_000],
                1,
                2,
                "NSE",
                "26000",
                "NIFTY50",
            )
        ],
    )
    assert official.feed(frame) == []  # ZeroDivisionError in its change %, logged and swallowed
    (state,) = HsmDecoder().decode(frame).changed
    assert state.price("ltp") == 24_000.0 and state.number("prev_close_price") == 0
