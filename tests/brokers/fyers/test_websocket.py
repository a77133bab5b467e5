"""The Fyers live feed against the local fake data socket: ticks, limits, stalls, drops, login."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.fyers_server import FakeFyersServer
from tests.fakes.sink import CollectingSink, wait_until
from trading_helper.brokers.base import FeedState
from trading_helper.brokers.fyers.broker import FyersBroker
from trading_helper.brokers.fyers.http import FyersHttp
from trading_helper.brokers.fyers.websocket import FyersLiveFeed
from trading_helper.brokers.tokens import save_token
from trading_helper.config import Settings
from trading_helper.errors import SubscriptionLimitExceeded


@pytest.fixture
async def fake() -> AsyncIterator[FakeFyersServer]:
    async with FakeFyersServer() as server:
        yield server


def make_feed(
    fake: FakeFyersServer,
    tmp_path: Path,
    *,
    login: bool = True,
    token_poll_s: float = 1.0,
    **overrides: object,
) -> FyersLiveFeed:
    settings: Settings = fake.settings(tmp_path, **overrides)
    if login:
        save_token(settings, "fyers", fake.access_token)
    http = FyersHttp(settings, max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.05)
    return FyersLiveFeed(
        settings, http, backoff_base_s=0.05, backoff_cap_s=0.2, auth_timeout_s=2.0, token_poll_s=token_poll_s
    )


@contextlib.asynccontextmanager
async def running(feed: FyersLiveFeed, sink: CollectingSink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(feed.run(sink))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await feed.http.aclose()


SYMBOLS = {"NSE:SBIN-EQ": 1, "NSE:NIFTY24DECFUT": 2, "NSE:NIFTY50-INDEX": 3}


async def test_snapshot_then_incremental_ticks_with_oi(fake: FakeFyersServer, tmp_path: Path) -> None:
    feed, sink = make_feed(fake, tmp_path), CollectingSink()
    await feed.subscribe(SYMBOLS)
    async with running(feed, sink):
        await wait_until(lambda: len({t.instrument_id for t in sink.ticks}) == 3 and len(sink.frames) > 8)
        assert feed.state is FeedState.CONNECTED
    assert sink.events[0].state is FeedState.CONNECTED and sink.events[0].instrument_ids == {1, 2, 3}
    assert sink.events[-1].state is FeedState.STOPPED
    ((_, topics),) = fake.subscribe_messages
    assert sorted(topics) == ["if|nse_cm|Nifty 50", "sf|nse_cm|1000", "sf|nse_fo|1001"]
    assert "authorization" not in fake.upgrade_headers[0]  # Fyers ignores upgrades that carry one
    future = [t for t in sink.ticks if t.instrument_id == 2]
    assert all(t.open_interest and t.open_interest >= 20_000 for t in future)
    assert len({t.open_interest for t in future}) > 1  # OI changes arrive in incremental updates
    volumes = [t.volume for t in future]
    assert volumes == sorted(volumes) and volumes[-1] > volumes[0]  # cumulative for the day
    index = [t for t in sink.ticks if t.instrument_id == 3]
    assert all(t.volume is None and t.last_price > 0 for t in index)
    assert all(t.exchange_ts.tzinfo is not None and t.received_ts.tzinfo is not None for t in sink.ticks)
    assert not sink.rejects


async def test_subscribe_5000_symbols_and_refuse_one_more(fake: FakeFyersServer, tmp_path: Path) -> None:
    feed, sink = make_feed(fake, tmp_path), CollectingSink()
    fake.updates_per_push = 200
    symbols = {f"NSE:S{i:04d}-EQ": i for i in range(5000)}
    await feed.subscribe(symbols)
    with pytest.raises(SubscriptionLimitExceeded, match="at most 5,000"):
        await feed.subscribe({"NSE:ONEMORE-EQ": 9999})
    async with running(feed, sink):
        await wait_until(lambda: len({t.instrument_id for t in sink.ticks}) == 5000, within_s=20)
    sizes = [len(topics) for _, topics in fake.subscribe_messages]
    assert sizes == [1500, 1500, 1500, 500]
    assert len({t for _, topics in fake.subscribe_messages for t in topics}) == 5000
    assert len(fake.symbol_token_auth) == 10  # looked up 500 at a time
    assert sink.events[0].instrument_ids == frozenset(range(5000))
    assert "NSE:ONEMORE-EQ" not in feed.subscriptions


async def test_silent_stall_is_detected_and_recovered(fake: FakeFyersServer, tmp_path: Path) -> None:
    feed, sink = make_feed(fake, tmp_path, STALL_TIMEOUT_S=0.5), CollectingSink()
    await feed.subscribe(SYMBOLS)
    async with running(feed, sink):
        await wait_until(lambda: len(sink.frames) > 3)
        fake.stall()
        stalled_at = len(sink.frames)
        await wait_until(lambda: len(fake.connections) == 2 and len(sink.frames) > stalled_at + 3, within_s=5)
    assert sink.states()[:3] == [FeedState.CONNECTED, FeedState.DISCONNECTED, FeedState.CONNECTED]
    connected, down, again = sink.events[:3]
    assert "stalled" in down.detail
    assert down.instrument_ids == again.instrument_ids == {1, 2, 3}
    assert connected.at < down.at < again.at  # the outage window handed to backfill
    assert sorted(fake.subscribe_messages[1][1]) == sorted(fake.subscribe_messages[0][1])


async def test_quiet_market_is_not_a_stall(fake: FakeFyersServer, tmp_path: Path) -> None:
    feed, sink = make_feed(fake, tmp_path, STALL_TIMEOUT_S=0.4), CollectingSink()
    fake.update_interval_s = 3600  # snapshots, then nothing: pongs alone keep the socket alive
    await feed.subscribe(SYMBOLS)
    async with running(feed, sink):
        await wait_until(lambda: len(sink.frames) >= 1)
        await asyncio.sleep(1.5)
        assert len(fake.connections) == 1 and feed.state is FeedState.CONNECTED


async def test_dropped_connection_is_resubscribed_with_a_fresh_token(
    fake: FakeFyersServer, tmp_path: Path
) -> None:
    feed, sink = make_feed(fake, tmp_path), CollectingSink()
    await feed.subscribe(SYMBOLS)
    async with running(feed, sink):
        await wait_until(lambda: len(sink.frames) > 3)
        # a morning login while running: the old token stops working, the new one is on disk
        fake.access_token = fake.issue_token()
        save_token(feed._settings, "fyers", fake.access_token)
        fake.drop_connections()
        before = len(sink.frames)
        await wait_until(lambda: len(fake.subscribe_messages) == 2 and len(sink.frames) > before + 3)
    assert fake.connections[1].hsm_key != fake.connections[0].hsm_key and fake.connections[1].authed
    assert sorted(fake.subscribe_messages[1][1]) == sorted(fake.subscribe_messages[0][1])
    assert sink.states()[:3] == [FeedState.CONNECTED, FeedState.DISCONNECTED, FeedState.CONNECTED]
    assert sink.events[1].at < sink.events[2].at


async def test_expired_token_is_login_required_without_connecting(
    fake: FakeFyersServer, tmp_path: Path
) -> None:
    feed, sink = make_feed(fake, tmp_path, login=False), CollectingSink()
    save_token(feed._settings, "fyers", fake.issue_token(valid_for_s=-60))
    await feed.subscribe(SYMBOLS)
    async with running(feed, sink):
        await wait_until(lambda: feed.state is FeedState.LOGIN_REQUIRED)
        await asyncio.sleep(0.3)
        assert fake.connections == [] and feed.state is FeedState.LOGIN_REQUIRED
    (event,) = sink.events
    assert event.state is FeedState.LOGIN_REQUIRED and event.instrument_ids == {1, 2, 3}
    assert "expired" in event.detail


async def test_revoked_token_is_login_required_with_no_reconnect_loop(
    fake: FakeFyersServer, tmp_path: Path
) -> None:
    feed, sink = make_feed(fake, tmp_path), CollectingSink()
    await feed.subscribe(SYMBOLS)
    async with running(feed, sink):
        await wait_until(lambda: len(sink.frames) > 2)
        fake.revoke_all_tokens()  # 06:00 IST: the session ends server-side
        fake.drop_connections()
        await wait_until(lambda: feed.state is FeedState.LOGIN_REQUIRED)
        await asyncio.sleep(0.3)
    assert len(fake.connections) == 2 and feed.attempts == 2
    assert sink.states() == [FeedState.CONNECTED, FeedState.DISCONNECTED, FeedState.LOGIN_REQUIRED]
    assert sink.events[-1].instrument_ids == {1, 2, 3}


async def test_refused_upgrade_is_login_required(fake: FakeFyersServer, tmp_path: Path) -> None:
    feed, sink = make_feed(fake, tmp_path), CollectingSink()
    fake.reject_upgrade_status = 403
    await feed.subscribe(SYMBOLS)
    async with running(feed, sink):
        await wait_until(lambda: feed.state is FeedState.LOGIN_REQUIRED)
        await asyncio.sleep(0.3)
    assert sink.states() == [FeedState.LOGIN_REQUIRED] and feed.attempts == 1


async def test_malformed_frames_are_counted_and_the_feed_goes_on(
    fake: FakeFyersServer, tmp_path: Path
) -> None:
    feed, sink = make_feed(fake, tmp_path), CollectingSink()
    await feed.subscribe(SYMBOLS)
    async with running(feed, sink):
        await wait_until(lambda: len(sink.frames) > 2)
        await fake.send_raw(fake.truncated_frame())
        await fake.send_raw(b"\x00")
        await fake.send_raw(bytes([0, 9, 6, 0, 0, 0, 1, 0, 1, ord("U"), 0, 77]))  # an update for topic 77
        await wait_until(lambda: sink.rejects["malformed_frame"] >= 3)
        before = len(sink.frames)
        await wait_until(lambda: len(sink.frames) > before + 3)
    assert len(fake.connections) == 1


async def test_subscribe_and_unsubscribe_while_connected(fake: FakeFyersServer, tmp_path: Path) -> None:
    feed, sink = make_feed(fake, tmp_path), CollectingSink()
    fake.ack_interval = 3
    await feed.subscribe({"NSE:SBIN-EQ": 1})
    fake.invalid_symbols = {"NSE:NOSUCH-EQ"}
    async with running(feed, sink):
        await wait_until(lambda: len(sink.frames) > 1)
        await feed.subscribe({"NSE:TCS-EQ": 7, "NSE:NOSUCH-EQ": 8})
        await wait_until(lambda: any(t.instrument_id == 7 for t in sink.ticks))
        await feed.unsubscribe(["NSE:SBIN-EQ"])
        await wait_until(lambda: len(fake.unsubscribe_messages) == 1)
        await wait_until(lambda: len(fake.acks) >= 2)
    assert fake.unsubscribe_messages[0][1] == ["sf|nse_cm|1000"]
    assert sink.rejects["unknown_instrument"] >= 1 and "NSE:NOSUCH-EQ" not in feed.subscriptions
    added = [e for e in sink.events if e.detail == "subscribed"]
    removed = [e for e in sink.events if e.detail == "unsubscribed"]
    assert added[0].instrument_ids == {7} and removed[0].instrument_ids == {1}
    assert len(fake.connections) == 1 and fake.acks == sorted(fake.acks)


async def test_cancel_stops_a_busy_feed(fake: FakeFyersServer, tmp_path: Path) -> None:
    feed, sink = make_feed(fake, tmp_path), CollectingSink()
    fake.update_interval_s, fake.updates_per_push = 0.001, 100  # a firehose: recv always ready
    await feed.subscribe({f"NSE:B{i}-EQ": i for i in range(100)})
    for _ in range(5):
        task = asyncio.create_task(feed.run(sink))
        await wait_until(lambda: len(sink.frames) > 20)
        sink.frames.clear()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
        assert task.cancelled() and feed.state is FeedState.STOPPED
    await feed.http.aclose()


async def test_depth_topics_fill_the_book_and_count_twice(fake: FakeFyersServer, tmp_path: Path) -> None:
    settings = fake.settings(tmp_path)
    save_token(settings, "fyers", fake.access_token)
    feed = FyersLiveFeed(settings, FyersHttp(settings), depth=True, backoff_base_s=0.05)
    sink = CollectingSink()
    with pytest.raises(SubscriptionLimitExceeded, match="x 2"):
        await feed.subscribe({f"NSE:D{i}-EQ": i for i in range(2501)})
    await feed.subscribe({"NSE:SBIN-EQ": 1, "NSE:NIFTY50-INDEX": 3})
    async with running(feed, sink):
        await wait_until(lambda: any(len(t.bids) == 5 for t in sink.ticks) and len(sink.frames) > 5)
    ((_, topics),) = fake.subscribe_messages
    assert sorted(topics) == [
        "dp|nse_cm|1000",
        "if|nse_cm|Nifty 50",
        "sf|nse_cm|1000",
    ]  # no depth for indices
    tick = next(t for t in reversed(sink.ticks) if t.bids)
    assert len(tick.asks) == 5 and tick.bids[0].price < tick.asks[0].price
    assert [level.quantity for level in tick.bids] == [100, 200, 300, 400, 500]


async def test_the_broker_has_one_feed(fake: FakeFyersServer, tmp_path: Path) -> None:
    broker = FyersBroker(fake.settings(tmp_path))
    try:
        assert broker.live_feed() is broker.live_feed()
        assert broker.name == "fyers"
    finally:
        await broker.aclose()


async def test_a_fresh_login_brings_the_feed_back_without_a_restart(
    fake: FakeFyersServer, tmp_path: Path
) -> None:
    feed, sink = make_feed(fake, tmp_path), CollectingSink()  # the real token poll: about once a second
    await feed.subscribe(SYMBOLS)
    async with running(feed, sink) as task:
        await wait_until(lambda: len(sink.frames) > 2)
        fake.revoke_all_tokens()  # 06:00 IST: the session ends server-side
        fake.drop_connections()
        await wait_until(lambda: feed.state is FeedState.LOGIN_REQUIRED, within_s=3)
        await asyncio.sleep(1.5)
        assert feed.attempts == 2 and len(fake.connections) == 2, "waiting for a login, not retrying"
        fake.access_token = fake.issue_token()  # `trading-helper login fyers` ...
        save_token(feed.settings, "fyers", fake.access_token)  # ... writes the token file
        await wait_until(lambda: feed.state is FeedState.CONNECTED, within_s=5)
        assert not task.done()
        before = len(sink.ticks)
        await wait_until(lambda: len(sink.ticks) > before + 3)
    assert sink.states() == [
        FeedState.CONNECTED,
        FeedState.DISCONNECTED,
        FeedState.LOGIN_REQUIRED,
        FeedState.CONNECTED,
        FeedState.STOPPED,
    ]
    assert all(e.instrument_ids == {1, 2, 3} for e in sink.events)
    assert fake.connections[-1].authed and sorted(fake.subscribe_messages[-1][1]) == sorted(
        fake.subscribe_messages[0][1]
    )


async def test_no_token_at_start_is_login_required_until_one_is_stored(
    fake: FakeFyersServer, tmp_path: Path
) -> None:
    feed, sink = make_feed(fake, tmp_path, login=False, token_poll_s=0.1), CollectingSink()
    async with running(feed, sink):
        await wait_until(lambda: feed.state is FeedState.LOGIN_REQUIRED, within_s=1)
        await feed.subscribe(SYMBOLS)
        await asyncio.sleep(0.3)
        assert feed.state is FeedState.LOGIN_REQUIRED and fake.connections == []
        save_token(feed.settings, "fyers", fake.access_token)
        await wait_until(lambda: feed.state is FeedState.CONNECTED)
        await wait_until(lambda: len({t.instrument_id for t in sink.ticks}) == 3)
    assert sink.states()[:2] == [FeedState.LOGIN_REQUIRED, FeedState.CONNECTED]
    assert "no fyers access token" in sink.events[0].detail and sink.events[1].instrument_ids == {1, 2, 3}
