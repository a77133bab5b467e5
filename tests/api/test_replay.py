"""Replay: exactly the stored updates, in exchange-time order, with hole markers where capture was
down, at the asked speed; over the live WebSocket protocol of the real API server."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.api.conftest import API_TOKEN, Api
from tests.api.test_ws import instrument_ids
from tests.ingest.direct_writer import DirectWriter
from trading_helper.candles.calendar import SessionLoader, years_between
from trading_helper.replay.source import Hole, replay_events


async def last_session(pool: asyncpg.Pool) -> datetime:
    """The start of the latest NSE session that ended at least an hour ago (ticks are kept 6 days)."""
    now = datetime.now(UTC)
    await SessionLoader().ensure(pool, "NSE", years_between(now - timedelta(days=10), now))
    start: datetime = await pool.fetchval(
        "SELECT max(lower(session)) FROM market_sessions WHERE calendar = 'NSE' AND upper(session) < $1",
        now - timedelta(hours=1),
    )
    assert start > now - timedelta(days=5), "no NSE session in the last 5 days"
    return start


def trades(
    iid: int, times: list[datetime], lag_s: float, rng: random.Random, volume0: int = 1000
) -> list[Any]:
    """One trade per time (rising volume), reported up to ``lag_s`` later by the exchange."""
    from trading_helper.models import Tick

    out = []
    for n, t in enumerate(times):
        ex = t + timedelta(seconds=rng.uniform(0, lag_s))
        out.append(
            Tick(
                instrument_id=iid,
                exchange_ts=ex,
                received_ts=ex + timedelta(milliseconds=5),
                last_price=100 + n * 0.05,
                last_quantity=1 + n % 7,
                volume=volume0 + 10 * (n + 1),
                open_interest=None,
                trade_ts=t,
            )
        )
    return out


async def stored(pool: asyncpg.Pool, ids: list[int], start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    """What the database holds: (instrument, exchange time, trade time, price) of every update."""
    rows = await pool.fetch(
        "SELECT instrument_id, coalesce(exchange_time, time) AS ex, time AS tt, ltp FROM tick_data "
        "WHERE instrument_id = ANY($1) AND time >= $2 AND time < $3 "
        "UNION ALL SELECT instrument_id, time, trade_time, ltp FROM quote_updates "
        "WHERE instrument_id = ANY($1) AND time >= $2 AND time < $3",
        ids,
        start,
        end,
    )
    return sorted((r["instrument_id"], r["ex"], r["tt"], r["ltp"]) for r in rows)


def url(api: Api, start: datetime, end: datetime, speed: str) -> str:
    return (
        api.url.replace("http://", "ws://")
        + f"/api/ws/replay?token={API_TOKEN}&from={start.isoformat().replace('+', '%2B')}"
        + f"&to={end.isoformat().replace('+', '%2B')}&speed={speed}"
    )


async def play(
    api: Api, refs: list[str], start: datetime, end: datetime, speed: str
) -> list[tuple[float, dict[str, Any]]]:
    """Every message of one replay with the loop time it arrived."""
    loop = asyncio.get_running_loop()
    got: list[tuple[float, dict[str, Any]]] = []
    async with connect(url(api, start, end, speed), max_size=None) as ws:
        await ws.send(json.dumps({"action": "subscribe", "instruments": refs, "intervals": ["1m"]}))
        async with asyncio.timeout(120):
            try:
                async for text in ws:
                    got.append((loop.time(), json.loads(text)))
            except ConnectionClosed:
                pass
        assert ws.close_code == 1000, ws.close_reason
    return got


async def test_replay_plays_exactly_the_stored_ticks_in_exchange_time_order_with_holes(api: Api) -> None:
    pool = api.runtime.pool
    a, b = (await instrument_ids(api))[:2]
    s = await last_session(pool)
    start, end = s + timedelta(minutes=10), s + timedelta(minutes=20)
    rng = random.Random(16)
    times = sorted(start + timedelta(milliseconds=rng.randrange(0, 600_000)) for _ in range(300))
    writer = await DirectWriter.open(pool)
    for iid in (a, b):
        ticks = trades(iid, sorted(set(times[iid % 2 :: 2])), 2.0, rng)
        await writer.write(ticks)
        # the same trade again, later, with a new quote: stored as a quote update, replayed too
        last = ticks[-1]
        again = type(last)(**{f: getattr(last, f) for f in last.__slots__})  # type: ignore[attr-defined]
        again.exchange_ts = last.exchange_ts + timedelta(seconds=1)
        again.bid_price = 99.0
        await writer.write([again])
    # a captured all along; b lost capture for two minutes
    await pool.execute(
        "INSERT INTO live_coverage (instrument_id, broker, period, open) VALUES "
        "($1, 'kite', tstzrange($3, $4), false), ($2, 'kite', tstzrange($3, $5), false), "
        "($2, 'kite', tstzrange($6, $4), false)",
        a,
        b,
        start - timedelta(minutes=1),
        end + timedelta(minutes=1),
        start + timedelta(minutes=4),
        start + timedelta(minutes=6),
    )
    want = await stored(pool, [a, b], start, end)
    assert len(want) == 302

    got = await play(api, [f"id:{a}", f"id:{b}"], start, end, "max")
    kinds = [m["type"] for _, m in got]
    assert kinds[0] == "subscribed" and kinds[-1] == "replay_end"
    assert set(kinds) == {"subscribed", "tick", "candle", "hole", "replay_end"}
    ticks = [m["data"] for _, m in got if m["type"] == "tick"]
    played = [
        (
            t["instrument_id"],
            datetime.fromisoformat(t["exchange_ts"]),
            datetime.fromisoformat(t["trade_ts"]),
            t["last_price"],
        )
        for t in ticks
    ]
    assert sorted(played) == want
    assert [p[1] for p in played] == sorted(p[1] for p in played)
    holes = [m for _, m in got if m["type"] == "hole"]
    assert [
        (h["instrument_id"], datetime.fromisoformat(h["from"]), datetime.fromisoformat(h["to"]))
        for h in holes
    ] == [(b, start + timedelta(minutes=4), start + timedelta(minutes=6))]
    assert got[-1][1] == {"type": "replay_end", "ticks": 302, "holes": 1}
    # the live protocol's candle messages: each moved by the tick before it
    first_candle = next(i for i, (_, m) in enumerate(got) if m["type"] == "candle")
    assert got[first_candle - 1][1]["type"] == "tick"
    assert got[first_candle][1]["interval"] == "1m"


async def test_the_window_merge_keeps_exchange_time_order_across_windows(api: Api) -> None:
    """Windows far smaller than the data, exchange stamps minutes after the trade (across window
    ends), and empty hours skipped: the same order as one sort of everything."""
    pool = api.runtime.pool
    _, _, c, d = (await instrument_ids(api))[:4]
    s = await last_session(pool)
    start, end = s + timedelta(minutes=30), s + timedelta(hours=5)
    rng = random.Random(7)
    writer = await DirectWriter.open(pool)
    for iid in (c, d):
        early = [start + timedelta(seconds=rng.uniform(0, 600)) for _ in range(120)]
        late = [start + timedelta(hours=4, seconds=rng.uniform(0, 600)) for _ in range(120)]
        await writer.write(trades(iid, sorted(set(early + late)), 240.0, rng))
    want = await stored(pool, [c, d], start, end)
    events = [e async for e in replay_events(pool, [c, d], start, end, window_rows=8)]
    played = [
        (t.instrument_id, t.exchange_ts, t.trade_ts, t.last_price)
        for _, t in events
        if not isinstance(t, Hole)
    ]
    assert sorted(played) == want
    assert [p[1] for p in played] == sorted(p[1] for p in played)
    assert [at for at, _ in events] == sorted(at for at, _ in events)


async def test_replay_keeps_the_asked_speed(api: Api) -> None:
    """A minute of exchange time at 6x takes 10 s (within 5 %), and no update goes out early."""
    pool = api.runtime.pool
    e = (await instrument_ids(api))[0]
    s = await last_session(pool)
    start = s + timedelta(hours=2)
    times = [start + timedelta(seconds=n) for n in range(61)]
    writer = await DirectWriter.open(pool)
    await writer.write(trades(e, times, 0.0, random.Random(1), volume0=50_000))
    got = await play(api, [f"id:{e}"], start, start + timedelta(minutes=1, seconds=1), "6")
    ticks = [(at, datetime.fromisoformat(m["data"]["exchange_ts"])) for at, m in got if m["type"] == "tick"]
    assert len(ticks) == 61
    (w0, t0), (w1, t1) = ticks[0], ticks[-1]
    due = (t1 - t0).total_seconds() / 6
    assert due == pytest.approx(10.0)
    assert abs((w1 - w0) - due) <= 0.05 * due, f"took {w1 - w0:.3f} s for {due:.3f} s"
    for at, ex in ticks:
        assert at - w0 >= (ex - t0).total_seconds() / 6 - 0.01


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("&from=2026-01-01T10:00&to=2026-01-01T09:00&speed=1", "from must be before to"),
        ("&from=yesterday&to=2026-01-01T09:00&speed=1", "from must be an ISO 8601 time"),
        ("&from=2026-01-01T09:00&to=2026-01-01T10:00&speed=0.5", "speed must be a number from 1"),
    ],
)
async def test_bad_parameters_close_with_the_reason(api: Api, query: str, reason: str) -> None:
    async with connect(
        api.url.replace("http://", "ws://") + f"/api/ws/replay?token={API_TOKEN}{query}"
    ) as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1008
    assert reason in (ws.close_reason or "")


async def test_a_wrong_token_is_refused(api: Api) -> None:
    async with connect(api.url.replace("http://", "ws://") + "/api/ws/replay?token=nope") as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1008


def run_replay(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": "/tmp", "DATABASE_URL": dsn, "BROKER": "kite"}
    return subprocess.run(
        [sys.executable, "-m", "trading_helper.cli", "replay", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_command_line_prints_the_same_messages_as_the_websocket(api: Api, db_dsn: str) -> None:
    pool = api.runtime.pool
    f = (await instrument_ids(api))[1]
    s = await last_session(pool)
    start, end = s + timedelta(hours=3), s + timedelta(hours=3, minutes=5)
    rng = random.Random(3)
    times = sorted({start + timedelta(milliseconds=rng.randrange(0, 300_000)) for _ in range(80)})
    await (await DirectWriter.open(pool)).write(trades(f, times, 1.0, rng, volume0=9_000))
    over_ws = [m for _, m in await play(api, [f"id:{f}"], start, end, "max")][1:]  # after "subscribed"
    done = await asyncio.to_thread(
        run_replay,
        db_dsn,
        f"id:{f}",
        "--from",
        start.isoformat(),
        "--to",
        end.isoformat(),
        "--interval",
        "1m",
    )
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert printed == over_ws
    assert sum(m["type"] == "tick" for m in printed) == len(times)


async def test_the_command_line_names_a_bad_reference(db_dsn: str) -> None:
    done = await asyncio.to_thread(
        run_replay, db_dsn, "NSE:NOPE", "--from", "2026-01-01T09:15", "--to", "2026-01-01T10:00"
    )
    assert done.returncode == 1
    assert "NSE:NOPE" in done.stderr and "Traceback" not in done.stderr
