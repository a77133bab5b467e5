"""The option chain routes over a real socket, PostgreSQL and Redis: the live chain from the latest
quotes (IVs recovered, PCR = the OI sums, max pain = brute force), expiries, following a chain
(its window of strikes subscribed and kept around ATM), minute snapshots read back with ``at``
exactly as computed then, OI change and build-up against the day's first snapshot, and series."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
import QuantLib as ql
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.api.conftest import API_TOKEN, api_redis_url
from tests.api.server import serve
from tests.options.market import RATE, STEP, Market, smile
from tests.options.test_analytics import _brute_max_pain
from trading_helper import clock
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.config import Settings
from trading_helper.options import history
from trading_helper.options.live import live_chain, underlying_of
from trading_helper.options.recorder import OptionsRecorder, day_start
from trading_helper.storage.instruments import get_instrument
from trading_helper.timeframes import IST

FORWARD = 24_033.0


@dataclass
class Env:
    url: str
    client: httpx.AsyncClient
    market: Market
    pool: asyncpg.Pool
    recorder: OptionsRecorder


@pytest.fixture(scope="module")
async def env(db_pool: asyncpg.Pool, redis_url: str) -> AsyncIterator[Env]:
    redis = aioredis.from_url(api_redis_url(redis_url))
    key = f"th:quotes:test-options:{uuid.uuid4().hex[:8]}"
    expiry = (clock.now().astimezone(IST) + timedelta(days=6)).date()
    market = Market(redis, key, expiry)
    async with db_pool.acquire() as conn:
        await market.load(conn)
    settings = Settings(API_TOKEN=API_TOKEN, BROKER="sim", OPTIONS_RATE=RATE)
    app = create_app(Runtime(settings, db_pool, redis), live_channel=f"th:live:opt:{key}", quotes_key=key)
    try:
        async with (
            serve(app) as url,
            httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
            ) as client,
        ):
            yield Env(url, client, market, db_pool, app.state.options.recorder)
    finally:
        await redis.delete(key)
        await redis.aclose()


async def test_expiries_and_the_live_chain(env: Env) -> None:
    now = clock.now()
    await env.market.quote(now, FORWARD)
    r = await env.client.get("/api/options/expiries", params={"underlying": "NSE:NIFTY 50"})
    assert r.status_code == 200, r.text
    assert r.json()["expiries"][0]["expiry"] == env.market.expiry.isoformat()
    assert r.json()["expiries"][0]["calls"] == 81
    r = await env.client.get("/api/options/chain", params={"underlying": "NIFTY"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["underlying"] == "NSE:NIFTY 50" and doc["expiry"] == env.market.expiry.isoformat()
    assert doc["forward_source"] == "parity" and doc["forward"] == pytest.approx(FORWARD, abs=1e-6)
    assert doc["rate"] == RATE and doc["atm_strike"] == 24_050.0
    assert len(doc["strikes"]) == 81
    # the chain's clock is past the quotes' (the request took its time): each IV is the one
    # QuantLib solves from the chain's own price, forward and time to expiry
    t = doc["time_to_expiry_years"]
    df = math.exp(-RATE * t)
    for row in doc["strikes"]:
        for kind, side in ((ql.Option.Call, row["ce"]), (ql.Option.Put, row["pe"])):
            if side["vega"] < 1e-4:  # a vol point worth under 1e-4: not pinned to 1e-6 by a double
                continue
            sd = ql.blackFormulaImpliedStdDev(
                kind, row["strike"], doc["forward"], side["iv_price"], df, 0.0, ql.nullDouble(), 1e-14, 1000
            )
            assert side["iv"] == pytest.approx(sd / math.sqrt(t), abs=1e-6), row["strike"]
            assert side["iv"] == pytest.approx(smile(row["strike"], FORWARD), abs=1e-3)
    calls = [row["ce"]["oi"] for row in doc["strikes"]]
    puts = [row["pe"]["oi"] for row in doc["strikes"]]
    assert doc["pcr_oi"] == sum(puts) / sum(calls)
    assert doc["max_pain"] == _brute_max_pain([row["strike"] for row in doc["strikes"]], calls, puts)
    assert {"iv_price", "oi_change", "delta", "gamma", "theta", "vega", "buildup"} <= set(
        doc["strikes"][0]["ce"]
    )
    assert doc["strikes"][0]["ce"]["oi_change"] is None  # no snapshot yet: no baseline


async def test_unknown_and_out_of_range(env: Env) -> None:
    r = await env.client.get("/api/options/chain", params={"underlying": "NSE:NOSUCH"})
    assert r.status_code == 404
    r = await env.client.get(
        "/api/options/chain", params={"underlying": "NSE:NIFTY 50", "expiry": "2001-01-04"}
    )
    assert r.status_code == 200 and r.json()["strikes"] == []
    r = await env.client.get(
        "/api/options/chain", params={"underlying": "NSE:NIFTY 50", "at": "2001-01-01T10:00"}
    )
    assert r.status_code == 404 and r.json()["code"] == "no_snapshot"
    r = await env.client.get("/api/options/series", params={"underlying": "NIFTY", "metric": "vix"})
    assert r.status_code == 422
    r = await env.client.post("/api/options/subscribe", json={"underlying": "NIFTY", "expiry": "2001-01-04"})
    assert r.status_code == 404 and r.json()["code"] == "no_options"


async def test_follow_snapshot_read_back_and_series(env: Env) -> None:
    m = env.market
    mark = clock.now().replace(second=0, microsecond=0)
    await m.quote(mark, FORWARD)
    r = await env.client.post("/api/options/subscribe", json={"underlying": "NSE:NIFTY 50", "strikes": 5})
    assert r.status_code == 200, r.text
    followed = set(r.json()["subscribed"])
    near = {iid for iid, (k, _) in m.strikes.items() if abs(k - 24_050.0) <= 5 * STEP}
    assert followed == near and len(near) == 22
    subscribed = {
        row["instrument_id"] for row in await env.pool.fetch("SELECT instrument_id FROM subscriptions")
    }
    assert near | {m.spot_id} <= subscribed

    # a snapshot of the mark, and the chain computed then
    assert await env.recorder.snapshot_all(mark) == 1
    assert await env.recorder.snapshot_all(mark) == 0  # no quote changed: no second row
    async with env.pool.acquire() as conn:
        u = underlying_of(await get_instrument(conn, m.spot_id))
    then = await live_chain(env.pool, m.redis, u, m.expiry, as_of=mark, rate=RATE, quotes_key=m.key)
    r = await env.client.get("/api/options/chain", params={"underlying": "NIFTY", "at": mark.isoformat()})
    assert r.status_code == 200, r.text
    assert r.json() == then.doc
    # at the quotes' own time every IV is the smile's, deep in and out of the money too
    for row in then.doc["strikes"]:
        for side in (row["ce"], row["pe"]):
            assert side["iv"] == pytest.approx(smile(row["strike"], FORWARD), abs=1e-6), row["strike"]

    # a minute later: prices up, OI up on every contract -> long build-up against the first snapshot
    later = mark + timedelta(minutes=1)
    await m.quote(later, FORWARD, oi_scale=1.5, price_shift=0.5)
    assert await env.recorder.snapshot_all(later) == 1
    r = await env.client.get(
        "/api/options/chain",
        params={"underlying": "NIFTY", "at": (later + timedelta(seconds=30)).isoformat()},
    )
    doc = r.json()
    assert doc["as_of"] == later.astimezone(IST).isoformat()
    first = {s["instrument_id"]: s for row in then.doc["strikes"] for s in (row["ce"], row["pe"])}
    for row in doc["strikes"]:
        for side in (row["ce"], row["pe"]):
            assert side["oi_change"] == side["oi"] - first[side["instrument_id"]]["oi"] > 0
            assert side["buildup"] == "long_buildup"

    # the future too: price up, OI up against the day's first snapshot
    assert doc["future"]["oi_change"] == 4_500_000 and doc["future"]["buildup"] == "long_buildup"
    assert then.doc["future"]["oi_change"] is None and then.doc["future"]["oi"] == 9_000_000
    r = await env.client.get(
        "/api/options/series",
        params={
            "underlying": "NIFTY",
            "metric": "atm_iv",
            "from": day_start(mark).isoformat(),
            "to": (later + timedelta(minutes=1)).isoformat(),
        },
    )
    assert r.status_code == 200, r.text
    points = r.json()["points"]
    assert [p["time"] for p in points] == [
        mark.astimezone(IST).isoformat(),
        later.astimezone(IST).isoformat(),
    ]
    assert points[0]["value"] == then.doc["atm_iv"] and points[1]["value"] == doc["atm_iv"]
    _, base = await history.baseline(env.pool, m.spot_id, m.expiry, day_start(mark), later)
    assert base[next(iter(near))].oi == first[next(iter(near))]["oi"]


async def test_window_follows_the_atm(env: Env) -> None:
    m = env.market
    mark = clock.now().replace(second=0, microsecond=0) + timedelta(minutes=5)
    moved = FORWARD + 20 * STEP  # the ATM moves 20 strikes up
    await m.quote(mark, moved)
    await env.recorder.snapshot_all(mark)
    rows = await env.pool.fetch("SELECT subscribed FROM option_chain_follows")
    now_followed = set(rows[0]["subscribed"])
    atm = 25_050.0
    assert {iid for iid, (k, _) in m.strikes.items() if abs(k - atm) <= 5 * STEP} <= now_followed
    # the old window's strikes more than 10 strikes from the new ATM are no longer followed nor subscribed
    far = {iid for iid, (k, _) in m.strikes.items() if abs(k - atm) > 10 * STEP}
    assert not (far & now_followed)
    subscribed = {
        row["instrument_id"] for row in await env.pool.fetch("SELECT instrument_id FROM subscriptions")
    }
    assert not (far & subscribed)


def test_mark_times_are_aware() -> None:
    assert day_start(datetime(2026, 12, 2, 3, 0, tzinfo=IST)).hour == 0


async def test_live_chain_on_the_websocket(env: Env) -> None:
    await env.market.quote(clock.now(), FORWARD)
    base = env.url.replace("http://", "ws://") + "/api/ws/options"
    query = urlencode({"token": API_TOKEN, "underlying": "NSE:NIFTY 50", "interval_ms": 250})
    async with connect(f"{base}?{query}") as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert first["type"] == "chain" and len(first["data"]["strikes"]) == 81
        assert first["data"]["forward"] == pytest.approx(FORWARD, abs=1e-6)
        # the next update carries a quote that changed in between
        await env.market.quote(clock.now(), FORWARD + 10)
        for _ in range(20):
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg["data"]["forward"] == pytest.approx(FORWARD + 10, abs=1e-6):
                break
        else:
            raise AssertionError("the chain on the WebSocket never showed the new quotes")
    async with connect(f"{base}?{urlencode({'token': API_TOKEN, 'underlying': 'NSE:NOSUCH'})}") as ws:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert msg["type"] == "error" and msg["code"] == "unknown_instrument"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with connect(f"{base}?{urlencode({'token': 'wrong', 'underlying': 'NIFTY'})}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
