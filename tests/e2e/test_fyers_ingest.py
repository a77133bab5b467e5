"""Fyers end to end: the fake Fyers' HSM data socket -> FyersLiveFeed -> IngestService -> tick_data,
through a dropped connection that is resubscribed and recorded as a live-coverage hole.

Real sockets (the fake Fyers on 127.0.0.1), real Redis stream, real PostgreSQL; nothing mocked.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
)
from tests.fakes.fyers_server import FakeFyersServer
from trading_helper.brokers.base import FeedState
from trading_helper.brokers.fyers.broker import FyersBroker
from trading_helper.brokers.tokens import save_token
from trading_helper.config import Settings
from trading_helper.ingest.coverage import LATE_TICK_GRACE
from trading_helper.timeframes import IST

SBIN, FUTURE = "NSE:SBIN-EQ", "NSE:NIFTY24DECFUT"  # a cash equity, and a future that carries OI


@dataclass(frozen=True)
class Market:
    """The fake's market for one symbol after ``k`` steps (its Quote.advance, in rupees)."""

    symbol: str
    derivative: bool

    def at(self, k: int) -> tuple[float, int, int]:
        seed = zlib.crc32(self.symbol.encode()) % 50_000
        ltp = 100_000 + seed + sum(5 if s % 3 else -5 for s in range(1, k + 1))
        oi = 20_000 + seed + 75 * (k // 2) if self.derivative else 0
        return ltp / 100, 1_000 + seed + 25 * k, oi

    def steps(self, volume: int) -> int:
        seed = zlib.crc32(self.symbol.encode()) % 50_000
        k, rest = divmod(volume - 1_000 - seed, 25)
        assert rest == 0 and k >= 0, (self.symbol, volume)
        return k


def first_delta(ts: datetime, last_quantity: int, volume: int) -> int:
    """The volume rule for the first tick after a (re)connect (trading_helper.ingest.volume)."""
    local = ts.astimezone(IST)
    return volume if (local.hour, local.minute) < (9, 16) else min(last_quantity, volume)


async def ticks_per_instrument(pool: asyncpg.Pool, after: datetime | None = None) -> dict[int, int]:
    rows = await pool.fetch(
        "SELECT instrument_id, count(*) FROM tick_data WHERE received_at > $1 GROUP BY 1",
        after or datetime(2000, 1, 1, tzinfo=UTC),
    )
    return {r[0]: r[1] for r in rows}


@dataclass
class Fyers:
    fake: FakeFyersServer
    settings: Settings
    broker: FyersBroker
    iids: dict[int, str]  # our instrument id -> Fyers symbol, both subscribed


@pytest.fixture
async def fyers(
    db_pool: asyncpg.Pool, redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Fyers]:
    """A fake Fyers (its symbol masters synced), a FyersBroker on it, SBIN and the future subscribed."""
    await reset_database(db_pool)
    async with FakeFyersServer() as fake:
        settings = fake.settings(
            tmp_path, REDIS_URL=redis_url, TICK_STREAM=new_stream(), **getattr(request, "param", {})
        )
        save_token(settings, "fyers", fake.access_token)
        broker = FyersBroker(settings)
        try:
            ids = await sync_master(db_pool, broker)
            iids = {ids[s]: s for s in (SBIN, FUTURE)}
            await persist_subscriptions(db_pool, sorted(iids))
            yield Fyers(fake, settings, broker, iids)
        finally:
            await broker.aclose()


async def flowing(pool: asyncpg.Pool, iids: dict[int, str], since: datetime | None = None) -> bool:
    """At least 4 ticks of each instrument received (after ``since``)."""
    counts = await ticks_per_instrument(pool, since)
    return all(counts.get(i, 0) >= 4 for i in iids)


async def test_ticks_with_oi_land_and_a_drop_is_resubscribed_as_a_coverage_hole(
    db_pool: asyncpg.Pool, fyers: Fyers
) -> None:
    markets = {SBIN: Market(SBIN, False), FUTURE: Market(FUTURE, True)}
    fake, iids = fyers.fake, fyers.iids
    async with running_service(fyers.settings, db_pool, fyers.broker) as service:
        await eventually(lambda: flowing(db_pool, iids), "ticks of both instruments written", service=service)
        assert len(fake.subscribe_messages) == 1
        dropped_at = datetime.now(UTC)
        fake.drop_connections()  # a network drop: no closing handshake
        await eventually(
            lambda: len(fake.subscribe_messages) == 2 and service.feed.state == FeedState.CONNECTED,
            "reconnected and resubscribed",
            service=service,
        )
        (first_conn, first_topics), (second_conn, second_topics) = fake.subscribe_messages
        assert second_conn != first_conn and sorted(second_topics) == sorted(first_topics)
        await eventually(
            lambda: flowing(db_pool, iids, dropped_at), "ticks after the reconnect written", service=service
        )
        assert service.status()["rejected"] == {}

    for iid, symbol in iids.items():
        market = markets[symbol]
        ranges = await coverage_of(db_pool, iid)
        assert [r.open for r in ranges] == [False, False], ranges  # closed by the drop, then by stop
        before, after = ranges
        assert before.upper < after.lower, "a hole from the drop to the resubscription"
        rows = await db_pool.fetch(
            "SELECT time, ltp, last_qty, volume, volume_delta, open_interest, received_at FROM tick_data "
            "WHERE instrument_id = $1 ORDER BY time",
            iid,
        )
        # nothing received in the hole (the ticks of the grace before its start came before the drop)
        assert not [r for r in rows if before.upper + LATE_TICK_GRACE < r["received_at"] < after.lower], (
            "nothing in the hole"
        )
        first_after = next(n for n, r in enumerate(rows) if r["received_at"] >= after.lower)
        assert market.steps(rows[0]["volume"]) == 0, "the first tick is the subscription's snapshot"
        assert 4 <= first_after < len(rows) - 3
        for n, row in enumerate(rows):
            k = market.steps(row["volume"])  # cumulative volume as sent: it says which step this is
            ltp, volume, oi = market.at(k)
            # incremental updates carry changed fields only: price and OI come from the merged state
            assert (row["ltp"], row["open_interest"]) == (pytest.approx(ltp), oi), (n, dict(row))
            if n == 0:  # the subscription's snapshot: the day's first volume
                assert row["last_qty"] == 10
                assert row["volume_delta"] == first_delta(row["time"], 10, volume)
            elif n == first_after and row["last_qty"] == 10:  # the snapshot after the reconnect, stamped
                # with a later last-trade second than the update before the drop: the baseline is kept
                # and the fake's market did not move meanwhile, so nothing is credited again. (Stamped
                # in the same second, it is no new trade and went to quote_updates instead.)
                assert row["volume_delta"] == 0 and row["volume"] == rows[n - 1]["volume"]
            else:
                assert row["last_qty"] == 25 and row["volume_delta"] == 25
                assert row["volume"] == rows[n - 1]["volume"] + 25, "no update lost on a connection"


STALL_S = 1.0


@pytest.mark.parametrize("fyers", [{"STALL_TIMEOUT_S": STALL_S}], indirect=True, ids=["stall-1s"])
async def test_a_silent_stall_ends_coverage_at_the_last_sign_of_life(
    db_pool: asyncpg.Pool, fyers: Fyers
) -> None:
    fake, iids = fyers.fake, fyers.iids
    async with running_service(fyers.settings, db_pool, fyers.broker) as service:
        await eventually(lambda: flowing(db_pool, iids), "ticks of both instruments written", service=service)
        stalled_at = datetime.now(UTC)
        fake.stall()  # the socket stays open: no data, and pings go unanswered
        await eventually(
            lambda: len(fake.subscribe_messages) == 2 and service.feed.state == FeedState.CONNECTED,
            "the stall detected, reconnected and resubscribed",
            service=service,
        )
        await eventually(
            lambda: flowing(db_pool, iids, stalled_at), "ticks after the reconnect written", service=service
        )
        for iid in iids:
            ranges = await coverage_of(db_pool, iid)
            assert [r.open for r in ranges] == [False, True], ranges
            before, after = ranges
            # nothing was received once the stall began: coverage ends there (a frame in flight may
            # arrive just after), not when the silence was noticed STALL_S later
            assert before.upper < stalled_at + timedelta(seconds=0.5), (before, stalled_at)
            assert after.lower - before.upper >= timedelta(seconds=STALL_S)
