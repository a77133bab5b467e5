"""The Kite ticker client against the local fake Kite (real WebSocket on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.kite_server import FakeKiteServer, pack_frame, pack_packet, sample_quote
from tests.fakes.sink import CollectingSink, wait_until
from trading_helper.brokers.base import FeedState
from trading_helper.brokers.kite.websocket import KiteLiveFeed
from trading_helper.brokers.tokens import save_token
from trading_helper.config import Settings
from trading_helper.errors import SubscriptionLimitExceeded, UnknownInstrument, ValidationError


@pytest.fixture
async def kite() -> AsyncIterator[FakeKiteServer]:
    async with FakeKiteServer(heartbeat_interval_s=0.1) as server:
        yield server


@pytest.fixture
def settings(kite: FakeKiteServer, tmp_path: Path) -> Settings:
    s = kite.settings(tmp_path, STALL_TIMEOUT_S=0.5)
    save_token(s, "kite", kite.access_token)
    return s


def make_feed(settings: Settings, **kwargs: object) -> KiteLiveFeed:
    kwargs.setdefault("backoff_base_s", 0.05)
    kwargs.setdefault("backoff_cap_s", 0.2)
    return KiteLiveFeed(settings, **kwargs)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(feed: KiteLiveFeed, sink: CollectingSink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(feed.run(sink))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def tokens(n: int, first: int = 100_001, first_id: int = 1) -> dict[str, int]:
    """``n`` NSE tokens (low byte 1) -> instrument ids ``first_id``..``first_id + n - 1``."""
    return {str(((first + i) << 8) | 1): first_id + i for i in range(n)}


async def test_5000_instruments_are_sharded_over_two_connections_and_ticks_arrive(
    kite: FakeKiteServer, tmp_path: Path
) -> None:
    # the production silence limit, not the module's 0.5 s: parsing 3,000-instrument frames on a
    # loaded 2-core machine can hold the loop that long, and the reconnect a stall causes would add
    # connection events this test counts (the watchdog has tests of its own below)
    settings = kite.settings(tmp_path, STALL_TIMEOUT_S=5.0)
    save_token(settings, "kite", kite.access_token)
    feed, sink = make_feed(settings), CollectingSink()
    subs = tokens(5000)
    await feed.subscribe(subs)
    async with running(feed, sink):
        # 5,000 subscriptions and modes over two sockets: seconds on a loaded 2-core machine (the 5 s
        # default failed once in a full suite beside other suites), so this wait gets 30 s
        await wait_until(
            lambda: (
                len(kite.connections) == 2
                and len(kite.subscribed_tokens) == 5000
                and all(m == "full" for conn in kite.connections for m in conn.modes.values())
            ),
            within_s=30,
        )
        assert sorted(len(conn.modes) for conn in kite.connections) == [2000, 3000]
        await wait_until(lambda: feed.state is FeedState.CONNECTED)
        assert await kite.push_ticks() == 5000
        await wait_until(lambda: len(sink.ticks) == 5000, within_s=30)
        big = [f for f in sink.frames if f]
        assert sorted(len(f) for f in big) == [2000, 3000]  # one sink call per frame
        assert {t.instrument_id for t in sink.ticks} == set(subs.values())
        tick = sink.ticks[0]
        assert tick.exchange_ts.tzinfo is not None and tick.received_ts.tzinfo is not None
        assert tick.bids and tick.asks and tick.volume is not None and tick.open_interest is not None
        connected = [e for e in sink.events if e.state is FeedState.CONNECTED]
        assert sorted(len(e.instrument_ids) for e in connected) == [2000, 3000]
        assert frozenset().union(*(e.instrument_ids for e in connected)) == set(subs.values())
        assert not sink.rejects
    assert feed.state is FeedState.STOPPED
    stopped = [e for e in sink.events if e.state is FeedState.STOPPED]
    assert stopped and stopped[-1].instrument_ids == set(subs.values())


async def test_heartbeats_are_empty_frames(kite: FakeKiteServer, settings: Settings) -> None:
    feed, sink = make_feed(settings), CollectingSink()
    await feed.subscribe(tokens(3))
    async with running(feed, sink):
        await wait_until(lambda: len(sink.frames) >= 3)
        assert all(f == [] for f in sink.frames) and not sink.rejects


async def test_more_than_9000_instruments_is_refused_with_the_numbers(settings: Settings) -> None:
    feed = make_feed(settings)
    await feed.subscribe(tokens(8000))
    with pytest.raises(SubscriptionLimitExceeded) as info:
        await feed.subscribe(tokens(1001, first=900_001))
    message = str(info.value)
    for number in ("3000", "9000", "8000", "1001", "9001"):
        assert number in message
    assert len(feed.subscriptions) == 8000
    await feed.subscribe(tokens(1000, first=900_001))  # exactly 9000 fits
    await feed.subscribe(tokens(5))  # re-subscribing known tokens adds nothing
    assert len(feed.subscriptions) == 9000


async def test_bad_tokens_and_modes_are_refused(settings: Settings) -> None:
    feed = make_feed(settings)
    with pytest.raises(UnknownInstrument):
        await feed.subscribe({"NSE:INFY": 1})
    with pytest.raises(ValidationError):
        await feed.subscribe({"408065": 1}, mode="depth")


async def test_silent_stall_is_detected_and_recovered(kite: FakeKiteServer, settings: Settings) -> None:
    feed, sink = make_feed(settings), CollectingSink()
    subs = tokens(10)
    await feed.subscribe(subs)
    async with running(feed, sink):
        await wait_until(lambda: sink.states() == [FeedState.CONNECTED] and len(sink.frames) >= 2)
        stalled_from = time.time()
        kite.stall()
        await wait_until(lambda: sink.states().count(FeedState.CONNECTED) == 2, within_s=5)
        connected, disconnected, reconnected = sink.events
        assert disconnected.state is FeedState.DISCONNECTED and "stalled" in disconnected.detail
        # the outage starts at the last frame received, not when the watchdog fired
        assert disconnected.at.timestamp() <= stalled_from + 0.05
        assert reconnected.at.timestamp() - disconnected.at.timestamp() >= 0.5
        assert (
            connected.instrument_ids
            == disconnected.instrument_ids
            == reconnected.instrument_ids
            == set(subs.values())
        )
        await wait_until(lambda: len(kite.subscribed_tokens) == 10 and len(kite.connections) >= 1)
        assert await kite.push_ticks() == 10
        await wait_until(lambda: len(sink.ticks) == 10)


async def test_dropped_connection_is_resubscribed_in_each_mode(
    kite: FakeKiteServer, settings: Settings
) -> None:
    feed, sink = make_feed(settings), CollectingSink()
    ltp, quote, full = tokens(3), tokens(2, first=200_001), tokens(4, first=300_001)
    await feed.subscribe(ltp, mode="ltp")
    await feed.subscribe(full)
    expected = {int(t): "ltp" for t in ltp} | {int(t): "full" for t in full}
    async with running(feed, sink):
        await wait_until(lambda: len(kite.connections) == 1 and kite.connections[0].modes == expected)
        await feed.subscribe(quote, mode="quote")  # added while connected: sent at once
        expected |= {int(t): "quote" for t in quote}
        await wait_until(lambda: kite.connections[0].modes == expected)
        first = kite.connections[0].number
        kite.drop_connections()
        await wait_until(
            lambda: (
                len(kite.connections) == 1
                and kite.connections[0].number != first
                and kite.connections[0].modes == expected
            )
        )
        await wait_until(lambda: sink.states()[-1] is FeedState.CONNECTED)
        assert sink.states()[-2] is FeedState.DISCONNECTED
        again = [m for n, m in kite.ws_messages if n == kite.connections[0].number]
        assert sorted(again[0]["v"]) == sorted(expected)  # every token, as JSON numbers
        assert all(isinstance(t, int) for t in again[0]["v"])
        modes_sent = {m["v"][0]: sorted(m["v"][1]) for m in again[1:]}
        assert modes_sent == {
            "ltp": sorted(map(int, ltp)),
            "quote": sorted(map(int, quote)),
            "full": sorted(map(int, full)),
        }
        assert await kite.push_ticks() == 9
        await wait_until(lambda: len(sink.ticks) == 9)


async def test_outage_window_events_carry_the_instruments_and_times(
    kite: FakeKiteServer, settings: Settings
) -> None:
    feed, sink = make_feed(settings, max_tokens_per_connection=2), CollectingSink()
    await feed.subscribe(tokens(4))  # two connections of two
    async with running(feed, sink):
        await wait_until(lambda: sink.states().count(FeedState.CONNECTED) == 2 and len(kite.connections) == 2)
        victim = kite.connections[0]
        ids_of_victim = {feed.subscriptions[str(t)] for t in victim.modes}
        await victim.ws.close()  # one connection goes; the other keeps streaming
        await wait_until(lambda: sink.states().count(FeedState.CONNECTED) == 3)
        down = next(e for e in sink.events if e.state is FeedState.DISCONNECTED)
        up = sink.events[-1]
        assert down.instrument_ids == up.instrument_ids == ids_of_victim
        assert down.at <= up.at and down.at.tzinfo is not None
        assert feed.connections == 2


async def test_malformed_frames_and_unknown_tokens_are_counted(
    kite: FakeKiteServer, settings: Settings
) -> None:
    feed, sink = make_feed(settings), CollectingSink()
    subs = tokens(2)
    await feed.subscribe(subs, mode="ltp")
    known = sample_quote(int(next(iter(subs))), 1)
    async with running(feed, sink):
        await wait_until(lambda: len(kite.connections) == 1 and len(kite.subscribed_tokens) == 2)
        await kite.send_raw(
            pack_frame([pack_packet(known, "ltp"), pack_packet(sample_quote(999_999_01, 1), "ltp")])
        )
        await kite.send_raw(pack_frame([pack_packet(known, "ltp"), b"\x00" * 9])[:-4])  # truncated
        await kite.send_raw("not json")
        await kite.send_raw('{"type": "error", "data": "Something went wrong"}')
        await kite.send_raw('{"type": "order", "data": {"order_id": "1"}}')
        await wait_until(lambda: sum(sink.rejects.values()) == 3 and len(sink.ticks) == 2)
    assert sink.rejects == {"unknown_instrument": 1, "truncated_packet": 1, "malformed_frame": 1}
    assert [t.last_price for t in sink.ticks] == [known.last_price] * 2


async def test_unsubscribe_stops_the_instruments(kite: FakeKiteServer, settings: Settings) -> None:
    feed, sink = make_feed(settings), CollectingSink()
    subs = tokens(3)
    await feed.subscribe(subs)
    async with running(feed, sink):
        await wait_until(lambda: len(kite.subscribed_tokens) == 3)
        gone = list(subs)[:2]
        await feed.unsubscribe(gone)
        await wait_until(lambda: kite.subscribed_tokens == {int(list(subs)[2])})
        assert sink.events[-1].state is FeedState.STOPPED and sink.events[-1].instrument_ids == {1, 2}
        await feed.unsubscribe(list(subs)[2:])
        await wait_until(lambda: not kite.connections)  # an empty shard closes its connection


async def test_expired_token_on_upgrade_is_login_required_without_a_retry_loop(
    kite: FakeKiteServer, settings: Settings
) -> None:
    feed, sink = make_feed(settings), CollectingSink()
    await feed.subscribe(tokens(5000))
    kite.expire_token()
    async with running(feed, sink) as task:
        await wait_until(lambda: feed.state is FeedState.LOGIN_REQUIRED)
        assert sink.states() == [FeedState.LOGIN_REQUIRED]
        assert (
            "trading-helper login kite" in sink.events[0].detail
            and len(sink.events[0].instrument_ids) == 5000
        )
        await asyncio.sleep(0.5)
        assert kite.rejected_upgrades in (1, 2)  # at most one try per connection, then silence
        assert not task.done() and sink.states() == [FeedState.LOGIN_REQUIRED]  # waiting, not ended


async def test_token_expiring_while_connected(kite: FakeKiteServer, settings: Settings) -> None:
    feed, sink = make_feed(settings), CollectingSink()
    await feed.subscribe(tokens(3))
    async with running(feed, sink):
        await wait_until(lambda: feed.state is FeedState.CONNECTED)
        kite.expire_token()  # drops the socket; the reconnect is refused
        await wait_until(lambda: feed.state is FeedState.LOGIN_REQUIRED)
        await asyncio.sleep(0.3)
    assert sink.states() == [FeedState.CONNECTED, FeedState.DISCONNECTED, FeedState.LOGIN_REQUIRED]
    assert kite.rejected_upgrades == 1


async def test_the_token_is_reread_before_every_connect(kite: FakeKiteServer, settings: Settings) -> None:
    feed, sink = make_feed(settings), CollectingSink()
    await feed.subscribe(tokens(3))
    async with running(feed, sink):
        await wait_until(lambda: feed.state is FeedState.CONNECTED)
        save_token(settings, "kite", "morning_token")  # a new login lands while running
        kite.expire_token("morning_token")
        await wait_until(lambda: sink.states().count(FeedState.CONNECTED) == 2)
        assert kite.upgrade_tokens == ["fake_access_token", "morning_token"]
        assert kite.rejected_upgrades == 0


async def test_subscriptions_changing_while_connecting_all_reach_the_server(
    kite: FakeKiteServer, settings: Settings
) -> None:
    feed, sink = make_feed(settings), CollectingSink()
    await feed.subscribe(tokens(3))
    expected = {int(t): "full" for t in tokens(3)}
    async with running(feed, sink):
        for step, mode in enumerate(["ltp", "quote", "full", "ltp"]):
            batch = tokens(2, first=500_001 + 10 * step, first_id=100 + 10 * step)
            await feed.subscribe(batch, mode=mode)
            expected |= {int(t): mode for t in batch}
            await asyncio.sleep(0.002 * step)
        await feed.unsubscribe(list(tokens(1)))
        del expected[int(next(iter(tokens(1))))]
        await wait_until(lambda: len(kite.connections) == 1 and kite.connections[0].modes == expected)
        # every instrument's coverage was announced, whether it joined before or after the connect
        announced = frozenset().union(
            *(e.instrument_ids for e in sink.events if e.state is FeedState.CONNECTED)
        )
        assert announced >= {feed.subscriptions[str(t)] for t in expected}
        assert len(set(feed.subscriptions.values())) == len(expected) == 10


async def test_a_fresh_login_brings_the_feed_back_without_a_restart(
    kite: FakeKiteServer, settings: Settings
) -> None:
    feed, sink = make_feed(settings), CollectingSink()  # the real token poll: about once a second
    subs = tokens(3)
    await feed.subscribe(subs)
    async with running(feed, sink) as task:
        await wait_until(lambda: feed.state is FeedState.CONNECTED)
        kite.expire_token("morning_token")  # 06:00 IST: the sockets drop, the old token gets 403
        await wait_until(lambda: feed.state is FeedState.LOGIN_REQUIRED, within_s=3)
        refused = kite.rejected_upgrades
        await asyncio.sleep(1.5)
        assert kite.rejected_upgrades == refused == 1, "waiting for a login, not retrying"
        save_token(settings, "kite", "morning_token")  # what `trading-helper login kite` writes
        logged_in = time.monotonic()
        await wait_until(lambda: feed.state is FeedState.CONNECTED, within_s=5)
        assert time.monotonic() - logged_in < 3.0 and not task.done()
        await wait_until(lambda: len(kite.subscribed_tokens) == 3)
        assert await kite.push_ticks() == 3
        await wait_until(lambda: len(sink.ticks) == 3)
    assert sink.states() == [
        FeedState.CONNECTED,
        FeedState.DISCONNECTED,
        FeedState.LOGIN_REQUIRED,
        FeedState.CONNECTED,
        FeedState.STOPPED,
    ]
    assert all(e.instrument_ids == set(subs.values()) for e in sink.events)
    assert kite.upgrade_tokens[-1] == "morning_token"


async def test_no_token_at_start_is_login_required_until_one_is_stored(
    kite: FakeKiteServer, tmp_path: Path
) -> None:
    settings = kite.settings(tmp_path / "no-login-yet", STALL_TIMEOUT_S=0.5)
    feed, sink = make_feed(settings, token_poll_s=0.1), CollectingSink()
    async with running(feed, sink):
        # at once, and with nothing subscribed yet (the service's status said "connecting" forever)
        await wait_until(lambda: feed.state is FeedState.LOGIN_REQUIRED, within_s=1)
        subs = tokens(2)
        await feed.subscribe(subs)
        await asyncio.sleep(0.3)
        assert feed.state is FeedState.LOGIN_REQUIRED and kite.upgrade_tokens == []
        assert sink.states() == [FeedState.LOGIN_REQUIRED] and "no kite access token" in sink.events[0].detail
        save_token(settings, "kite", kite.access_token)
        await wait_until(lambda: feed.state is FeedState.CONNECTED)
        await wait_until(lambda: len(kite.subscribed_tokens) == 2)
        assert await kite.push_ticks() == 2
        await wait_until(lambda: len(sink.ticks) == 2)
    assert sink.states()[:2] == [FeedState.LOGIN_REQUIRED, FeedState.CONNECTED]
    assert sink.events[1].instrument_ids == set(subs.values())


async def test_a_new_token_that_is_refused_too_is_reported_again_and_waited_out(
    kite: FakeKiteServer, settings: Settings
) -> None:
    feed, sink = make_feed(settings, token_poll_s=0.1), CollectingSink()
    await feed.subscribe(tokens(2))
    kite.expire_token("the_right_one", disconnect=False)
    async with running(feed, sink):
        await wait_until(lambda: feed.state is FeedState.LOGIN_REQUIRED)
        save_token(settings, "kite", "a_wrong_one")
        await wait_until(lambda: sink.states().count(FeedState.LOGIN_REQUIRED) == 2)
        await asyncio.sleep(0.3)
        assert kite.rejected_upgrades == 2 and feed.state is FeedState.LOGIN_REQUIRED
        save_token(settings, "kite", "the_right_one")
        await wait_until(lambda: feed.state is FeedState.CONNECTED)
    assert kite.upgrade_tokens == ["fake_access_token", "a_wrong_one", "the_right_one"]
