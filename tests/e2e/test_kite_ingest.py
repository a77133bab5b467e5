"""Kite end to end: the fake Kite's binary ticks -> KiteLiveFeed -> IngestService -> tick_data -> candles.

Real sockets (the fake Kite on 127.0.0.1), real Redis stream, real PostgreSQL; nothing mocked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.helpers import (
    coverage_of,
    eventually,
    new_stream,
    persist_subscriptions,
    reset_database,
    running_service,
    sync_master,
    trades_stamped_after_capture,
    written_at_least,
)
from tests.fakes.kite_server import DEFAULT_INSTRUMENTS, FakeKiteServer, sample_quote
from tests.fakes.kite_server import TRADE_LAG_S as KITE_TRADE_LAG_S
from trading_helper.brokers.base import FeedState
from trading_helper.brokers.kite.broker import KiteBroker
from trading_helper.brokers.tokens import save_token
from trading_helper.config import Settings
from trading_helper.ingest.service import IngestService
from trading_helper.ingest.status import read_status
from trading_helper.timeframes import IST, Timeframe

RELIANCE, NIFTY_OPTION, NIFTY_INDEX = "738561", "12345602", "256265"  # NSE equity, NFO option, index


@dataclass
class Kite:
    server: FakeKiteServer
    settings: Settings
    broker: KiteBroker
    ids: dict[str, int]  # Kite token -> our instrument id


@pytest.fixture
async def kite(
    db_pool: asyncpg.Pool, redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Kite]:
    """A fake Kite (its master synced into the database) and a KiteBroker pointed at it."""
    await reset_database(db_pool)
    instruments: list[dict[str, str]] = getattr(request, "param", DEFAULT_INSTRUMENTS)
    async with FakeKiteServer(heartbeat_interval_s=0.1) as server:
        server.instruments = instruments
        settings = server.settings(tmp_path, REDIS_URL=redis_url, TICK_STREAM=new_stream())
        save_token(settings, "kite", server.access_token)
        broker = KiteBroker(settings)
        try:
            yield Kite(server, settings, broker, await sync_master(db_pool, broker))
        finally:
            await broker.aclose()


def subscribed_in_full_mode(server: FakeKiteServer, tokens: set[str]) -> bool:
    modes = {str(t): m for conn in server.connections for t, m in conn.modes.items()}
    return set(modes) == tokens and all(m == "full" for m in modes.values())


async def connected(kite: Kite, service: IngestService, tokens: set[str]) -> None:
    await eventually(
        lambda: subscribed_in_full_mode(kite.server, tokens) and service.feed.state == FeedState.CONNECTED,
        "the service's feed connected and subscribed every token in full mode",
        service=service,
    )
    await trades_stamped_after_capture(time.time(), KITE_TRADE_LAG_S)


def first_delta(ts: datetime, last_quantity: int, volume: int) -> int:
    """The volume rule for the first tick after a (re)connect (trading_helper.ingest.volume)."""
    local = ts.astimezone(IST)
    return volume if (local.hour, local.minute) < (9, 16) else min(last_quantity, volume)


TICK_COLUMNS = (
    "time, instrument_id, ltp, last_qty, volume, volume_delta, avg_price, open_interest, "
    "bid_price, bid_qty, ask_price, ask_qty, received_at, exchange_time"
)


async def test_ticks_land_in_tick_data_and_candles(db_pool: asyncpg.Pool, kite: Kite) -> None:
    tokens = {RELIANCE, NIFTY_OPTION, NIFTY_INDEX}
    await persist_subscriptions(db_pool, [kite.ids[t] for t in tokens])
    frames = 3
    async with running_service(kite.settings, db_pool, kite.broker) as service:
        await connected(kite, service, tokens)
        first_second = int(time.time())
        for _ in range(frames):
            assert await kite.server.push_ticks() == len(tokens)  # one frame: a packet per token
        await eventually(
            lambda: written_at_least(db_pool, frames * len(tokens)),
            f"{frames * len(tokens)} ticks in tick_data",
            service=service,
        )
        last_second = int(time.time())
        assert service.status()["rejected"] == {}

    rows = await db_pool.fetch(f"SELECT {TICK_COLUMNS} FROM tick_data ORDER BY instrument_id, time")
    assert len(rows) == frames * len(tokens)
    by_id: dict[int, list[asyncpg.Record]] = {}
    for row in rows:
        by_id.setdefault(row["instrument_id"], []).append(row)
    assert set(by_id) == {kite.ids[t] for t in tokens}

    for token in tokens:
        mine = by_id[kite.ids[token]]
        assert [r["time"] for r in mine] == sorted({r["time"] for r in mine}), "unique, in arrival order"
        for seq, row in enumerate(mine, start=1):  # the fake's seq-th frame on this connection
            q = sample_quote(int(token), seq)
            stamp = row["exchange_time"]  # the fake's exchange stamp; time is the trade's (a second earlier)
            assert first_second <= stamp.timestamp() < last_second + 1
            traded = stamp if token == NIFTY_INDEX else stamp.replace(microsecond=0) - timedelta(seconds=1)
            assert row["time"].replace(microsecond=0) == traded
            assert row["received_at"] >= row["time"].replace(microsecond=0)
            assert row["ltp"] == pytest.approx(q.last_price, abs=1e-9)  # paise -> rupees
            if token == NIFTY_INDEX:  # index packets carry prices only
                assert (row["volume"], row["volume_delta"], row["open_interest"], row["last_qty"]) == (
                    None,
                    0,
                    None,
                    None,
                )
                continue
            assert row["last_qty"] == q.last_quantity
            assert row["volume"] == q.volume == 1000 + 10 * seq  # cumulative for the day, as sent
            expected = first_delta(row["time"], q.last_quantity, q.volume) if seq == 1 else 10
            assert row["volume_delta"] == expected
            assert row["open_interest"] == q.oi
            assert row["avg_price"] == pytest.approx(q.average_price)
            assert (row["bid_price"], row["bid_qty"]) == (pytest.approx(q.bids[0][1]), q.bids[0][0])
            assert (row["ask_price"], row["ask_qty"]) == (pytest.approx(q.asks[0][1]), q.asks[0][0])

    await db_pool.execute("CALL refresh_candles()")
    for tf in (Timeframe.M1, Timeframe.M5, Timeframe.D1):
        got = await db_pool.fetch(
            f"SELECT instrument_id, bucket, open, high, low, close, volume, open_interest, tick_count "
            f"FROM {tf.relation} WHERE instrument_id = ANY($1::integer[]) ORDER BY 1, 2",
            list(by_id),
        )
        assert [tuple(r) for r in got] == expected_candles(by_id, tf), tf


def expected_candles(by_id: dict[int, list[asyncpg.Record]], tf: Timeframe) -> list[tuple[Any, ...]]:
    """Candles computed here from the stored ticks: first/max/min/last price, summed increments,
    last open interest, tick count."""
    out = []
    for iid in sorted(by_id):
        buckets: dict[datetime, list[asyncpg.Record]] = {}
        for row in by_id[iid]:
            buckets.setdefault(tf.bucket_start(row["time"]), []).append(row)
        for bucket in sorted(buckets):
            ticks = buckets[bucket]
            prices = [t["ltp"] for t in ticks]
            out.append(
                (
                    iid,
                    bucket,
                    prices[0],
                    max(prices),
                    min(prices),
                    prices[-1],
                    sum(t["volume_delta"] for t in ticks),
                    ticks[-1]["open_interest"],
                    len(ticks),
                )
            )
    return out


async def test_an_expired_token_at_start_is_reported_and_not_retried(
    db_pool: asyncpg.Pool, kite: Kite
) -> None:
    await persist_subscriptions(db_pool, [kite.ids[RELIANCE], kite.ids[NIFTY_OPTION]])
    kite.server.expire_token(disconnect=False)  # the stored token is yesterday's: the upgrade gets 403
    async with running_service(kite.settings, db_pool, kite.broker) as service:
        await eventually(
            lambda: service.status()["feed_state"] == "login_required", "login_required", service=service
        )
        # a reconnect loop would try again within the ticker's first backoff (at most 1 s)
        await asyncio.sleep(1.2)
        assert kite.server.rejected_upgrades == 1 and len(kite.server.upgrade_tokens) == 1
        assert kite.server.connections == [] and service.task_errors() == {}
        status = service.status()
        assert status["subscriptions"] == 2 and status["written"] == 0
        assert service.started_at is not None
        ours = service.started_at.isoformat()

        async def published() -> bool:  # what `trading-helper status` shows (the hash is shared: find ours)
            status = await read_status(kite.settings)
            return status.get("started_at") == ours and status["feed_state"] == "login_required"

        await eventually(published, "login_required published to Redis", service=service)
    assert await db_pool.fetchval("SELECT count(*) FROM live_coverage") == 0  # nothing was captured


async def test_a_token_expiring_while_running_ends_coverage_until_a_fresh_login_resumes_it(
    db_pool: asyncpg.Pool, kite: Kite
) -> None:
    tokens = {RELIANCE, NIFTY_OPTION}
    ids = [kite.ids[t] for t in tokens]
    await persist_subscriptions(db_pool, ids)
    async with running_service(kite.settings, db_pool, kite.broker) as service:
        await connected(kite, service, tokens)
        await kite.server.push_ticks()
        await eventually(lambda: written_at_least(db_pool, 2), "2 ticks written", service=service)
        expired_at = datetime.now(UTC)
        kite.server.expire_token("morning_token")  # 06:00 IST: the token dies and the sockets drop
        await eventually(
            lambda: service.status()["feed_state"] == "login_required", "login_required", service=service
        )
        # one reconnect (the drop looks like any network failure), refused with 403, then no more:
        # a loop would retry within its second backoff step (at most 2 s)
        await asyncio.sleep(2.2)
        assert kite.server.rejected_upgrades == 1 and len(kite.server.upgrade_tokens) == 2
        assert service.task_errors() == {} and service.status()["feed_state"] == "login_required"
        for iid in ids:
            ranges = await coverage_of(db_pool, iid)
            assert len(ranges) == 1 and not ranges[0].open, ranges
            assert ranges[0].upper <= expired_at, "coverage ends at the last frame before the drop"

        save_token(kite.settings, "kite", "morning_token")  # `trading-helper login kite`, no restart
        logged_in_at = datetime.now(UTC)
        await eventually(
            lambda: service.status()["feed_state"] == "connected", "connected again", 5, service=service
        )
        await connected(kite, service, tokens)
        await kite.server.push_ticks()
        await eventually(
            lambda: written_at_least(db_pool, 4), "ticks written after the login", service=service
        )
        assert service.task_errors() == {} and kite.server.upgrade_tokens[-1] == "morning_token"
        for iid in ids:  # capture resumes after the login: a second range, open
            before, after = await coverage_of(db_pool, iid)
            assert not before.open and after.open and after.lower >= logged_in_at


async def test_no_token_at_start_is_login_required_until_a_login(db_pool: asyncpg.Pool, kite: Kite) -> None:
    tokens = {RELIANCE}
    await persist_subscriptions(db_pool, [kite.ids[RELIANCE]])
    token_file = kite.settings.TOKEN_DIR / "kite.token"
    token_file.unlink()  # never logged in
    async with running_service(kite.settings, db_pool, kite.broker) as service:
        await eventually(
            lambda: service.status()["feed_state"] == "login_required", "login_required", 2, service=service
        )
        await asyncio.sleep(0.5)
        assert service.status()["feed_state"] == "login_required" and kite.server.upgrade_tokens == []
        save_token(kite.settings, "kite", kite.server.access_token)
        await connected(kite, service, tokens)
        await kite.server.push_ticks()
        await eventually(
            lambda: written_at_least(db_pool, 1), "a tick written after the login", service=service
        )


def many_instruments(n: int) -> list[dict[str, str]]:
    """``n`` NSE equities (segment 1 in the token's low byte)."""
    template = DEFAULT_INSTRUMENTS[0]
    return [
        {
            **template,
            "instrument_token": str(((100_001 + i) << 8) | 1),
            "exchange_token": str(100_001 + i),
            "tradingsymbol": f"E2E{i:05d}",
            "name": f"E2E STOCK {i}",
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("kite", [many_instruments(5000)], indirect=True, ids=["5000-instruments"])
async def test_5000_instruments_are_sharded_over_two_connections(db_pool: asyncpg.Pool, kite: Kite) -> None:
    all_tokens = list(kite.ids)
    assert len(all_tokens) == 5000
    # 3,000 persisted (subscribed on start: a full first connection), the other 2,000 subscribed
    # through the running service as the API does: they need a second connection
    await persist_subscriptions(db_pool, [kite.ids[t] for t in all_tokens[:3000]])
    async with running_service(kite.settings, db_pool, kite.broker) as service:
        await connected(kite, service, set(all_tokens[:3000]))
        # Kite refuses a connection beyond the key's limit with 429 (here: another process holds
        # the other two): the second connection's instruments are not captured until it is up
        kite.server.max_connections = 1
        await service.subscribe([kite.ids[t] for t in all_tokens[3000:]])
        await eventually(
            lambda: len(kite.server.upgrade_tokens) >= 2, "a refused second connection", service=service
        )
        first = {str(t) for t in kite.server.connections[0].modes}
        waiting = {kite.ids[t] for t in all_tokens if t not in first}
        assert len(first) == 3000 and len(waiting) == 2000
        live = {r[0] for r in await db_pool.fetch("SELECT instrument_id FROM live_coverage WHERE open")}
        assert live == {kite.ids[t] for t in first}, "instruments without a connection are not captured"
        released_at = datetime.now(UTC)
        kite.server.max_connections = 3
        await eventually(lambda: len(kite.server.connections) == 2, "a second connection", service=service)
        await connected(kite, service, set(all_tokens))
        per_connection = [{str(t) for t in conn.modes} for conn in kite.server.connections]
        assert sorted(len(tokens) for tokens in per_connection) == [2000, 3000]
        starts = await db_pool.fetch(
            "SELECT instrument_id, min(lower(period)) AS lo FROM live_coverage "
            "WHERE instrument_id = ANY($1::integer[]) GROUP BY 1",
            list(waiting),
        )
        assert len(starts) == 2000 and all(r["lo"] >= released_at for r in starts)

        assert await kite.server.push_ticks() == 5000  # one frame per connection
        await eventually(lambda: written_at_least(db_pool, 5000), "5000 ticks written", 20, service=service)
        stored = {r[0] for r in await db_pool.fetch("SELECT DISTINCT instrument_id FROM tick_data")}
        for tokens in per_connection:
            assert {kite.ids[t] for t in tokens} <= stored
        assert stored == set(kite.ids.values())
        status = service.status()
        assert status["subscriptions"] == 5000 and status["rejected"] == {} and status["written"] == 5000
        open_ranges = await db_pool.fetchval(
            "SELECT count(DISTINCT instrument_id) FROM live_coverage WHERE open"
        )
        assert open_ranges == 5000
