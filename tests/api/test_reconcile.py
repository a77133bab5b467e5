"""Reconciliation: every difference planted in a fake Kite's 1m history is found, and no other;
the summary over HTTP, and reads that prefer the broker's candles."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from tests.api.conftest import Api
from tests.api.test_replay import last_session
from tests.api.test_ws import instrument_ids
from tests.ingest.direct_writer import DirectWriter
from tests.storage.helpers import refresh_all
from trading_helper.models import Tick
from trading_helper.reconcile.job import reconcile_day
from trading_helper.reconcile.schedule import due_day
from trading_helper.timeframes import IST

M = timedelta(minutes=1)


def kite_row(bucket: datetime, o: float, h: float, low: float, c: float, v: int, oi: int | None) -> list[Any]:
    return [bucket.astimezone(IST).strftime("%Y-%m-%dT%H:%M:%S+0530"), o, h, low, c, v, oi]


async def write_session(
    pool: asyncpg.Pool, iid: int, start: datetime, end: datetime, skip: set[datetime]
) -> None:
    """A trade every few seconds in [start, end) but in the minutes of ``skip``; prices in paise."""
    rng = random.Random(iid)
    out, t, price, volume = [], start, 500.0, 10_000
    while t < end:
        if t.replace(second=0, microsecond=0) not in skip:
            price = round((price + rng.choice((-0.05, 0, 0.05, 0.1))) * 20) / 20
            volume += rng.randrange(1, 50)
            out.append(
                Tick(
                    instrument_id=iid,
                    exchange_ts=t,
                    received_ts=t + timedelta(milliseconds=3),
                    last_price=price,
                    last_quantity=1,
                    volume=volume,
                    open_interest=7000 + int((t - start).total_seconds()) // 60,
                    trade_ts=t,
                )
            )
        t += timedelta(seconds=rng.randrange(3, 9))
    await (await DirectWriter.open(pool)).write(out)


async def test_reconciliation_finds_every_planted_difference_and_no_other(api: Api) -> None:
    pool = api.runtime.pool
    a, b = (await instrument_ids(api))[:2]
    s = (await last_session(pool)).replace(second=0, microsecond=0)
    day: date = s.astimezone(IST).date()
    start, end = s + 30 * M, s + 50 * M
    quiet = start + 10 * M  # a has no trade in this minute
    await write_session(pool, a, start, end, {quiet})
    await write_session(pool, b, start, end, set())
    await refresh_all(pool)
    for iid in (a, b):
        await pool.execute(
            "INSERT INTO live_coverage (instrument_id, broker, period, open) VALUES ($1, 'kite', tstzrange($2, $3), false)",
            iid,
            start,
            end,
        )
        await pool.execute(
            "INSERT INTO subscriptions (instrument_id) VALUES ($1) ON CONFLICT DO NOTHING", iid
        )

    # the broker's history: the live candles, with differences planted
    planted: set[tuple[int, datetime, str]] = set()
    for iid in (a, b):
        token = await pool.fetchval(
            "SELECT broker_token FROM instrument_broker_ids WHERE broker = 'kite' AND instrument_id = $1", iid
        )
        live = {
            r["bucket"]: r
            for r in await pool.fetch("SELECT * FROM live_candles($1, '1m', $2, $3)", iid, start, end)
        }
        assert len(live) == (19 if iid == a else 20)
        rows: dict[datetime, list[Any]] = {
            t: kite_row(t, r["open"], r["high"], r["low"], r["close"], r["volume"], r["open_interest"])
            for t, r in live.items()
        }
        if iid == a:
            rows[start + 3 * M][4] = round(rows[start + 3 * M][4] + 0.05, 2)
            planted.add((a, start + 3 * M, "close"))
            rows[quiet] = kite_row(quiet, 500, 501, 499, 500.5, 12, 7010)
            planted.add((a, quiet, "live_missing"))
            del rows[start + 15 * M]
            planted.add((a, start + 15 * M, "broker_missing"))
        else:
            rows[start + 5 * M][5] += 7
            planted.add((b, start + 5 * M, "volume"))
            rows[start + 6 * M][2] += 1
            rows[start + 6 * M][3] -= 1
            planted |= {(b, start + 6 * M, "high"), (b, start + 6 * M, "low")}
            rows[start + 7 * M][6] += 3
            planted.add((b, start + 7 * M, "open_interest"))
            # outside live coverage: not compared, counted
            rows[end + 5 * M] = kite_row(end + 5 * M, 1, 2, 0.5, 1.5, 3, 9)
        api.kite.history_rows[token] = [rows[t] for t in sorted(rows)]

    seen: list[tuple[int, int]] = []
    summary = await reconcile_day(pool, api.runtime.broker, day, progress=lambda d, n: seen.append((d, n)))
    assert seen == [(1, 2), (2, 2)]
    assert (summary.instruments, summary.failed, summary.differences) == (2, 0, len(planted))
    found = {
        (r["instrument_id"], r["bucket"], r["kind"])
        for r in await pool.fetch("SELECT * FROM reconcile_differences WHERE day = $1", day)
    }
    assert found == planted

    answer = (await api.client.get("/api/reconcile", params={"date": day.isoformat()})).json()
    assert answer["date"] == day.isoformat()
    [run] = answer["runs"]
    assert run["finished_at"] is not None and (run["instruments"], run["done"], run["differences"]) == (
        2,
        2,
        7,
    )
    by_id = {i["instrument_id"]: i for i in answer["instruments"]}
    assert by_id[a]["kinds"] == {"close": 1, "live_missing": 1, "broker_missing": 1}
    assert by_id[b]["kinds"] == {"volume": 1, "high": 1, "low": 1, "open_interest": 1}
    assert (by_id[a]["compared"], by_id[b]["compared"], by_id[b]["uncovered"]) == (20, 20, 1)

    # a second run replaces the first: the same differences, not twice as many
    again = await reconcile_day(pool, api.runtime.broker, day)
    assert again.differences == len(planted)
    assert await pool.fetchval("SELECT count(*) FROM reconcile_differences WHERE day = $1", day) == len(
        planted
    )

    # reads: by default as before (live where captured), prefer=broker takes the broker's candles
    async def series(**extra: str) -> dict[datetime, dict[str, Any]]:
        params = {"instrument": f"id:{a}", "interval": "1m", "from": start.isoformat(), "to": end.isoformat()}
        answer = await api.client.get("/api/candles", params={**params, **extra})
        assert answer.status_code == 200, answer.text
        return {datetime.fromisoformat(c["time"]): c for c in answer.json()["candles"]}

    live_first, broker_first = await series(), await series(prefer="broker")
    assert live_first == await series(prefer="live")
    changed = start + 3 * M
    assert live_first[changed]["source"] == "live" and broker_first[changed]["source"] == "broker"
    assert broker_first[changed]["close"] == round(live_first[changed]["close"] + 0.05, 2)
    assert live_first[quiet]["source"] == broker_first[quiet]["source"] == "broker"  # no live candle there
    assert broker_first[start + 15 * M]["source"] == "live"  # the broker has none
    assert {t for t, c in broker_first.items() if c["source"] == "live"} == {start + 15 * M}
    bad = await api.client.get("/api/candles", params={"instrument": f"id:{a}", "prefer": "mine"})
    assert bad.status_code == 422


async def test_the_command_line_runs_a_day_and_prints_its_summary(api: Api, db_dsn: str) -> None:
    """After the test above (same database): the command runs the day again against the fake Kite
    and prints the same findings as the API."""
    day = (await api.runtime.pool.fetchval("SELECT max(day) FROM reconcile_runs")).isoformat()
    st = api.runtime.settings
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": "/tmp",
        "DATABASE_URL": db_dsn,
        "BROKER": "kite",
        "KITE_API_URL": st.KITE_API_URL,
        "KITE_API_KEY": st.KITE_API_KEY,
        "KITE_API_SECRET": st.KITE_API_SECRET.get_secret_value(),
        "TOKEN_DIR": str(st.TOKEN_DIR),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trading_helper.cli", "reconcile", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    calls = sum(api.kite.history_calls.values())
    done = await asyncio.to_thread(run, "--date", day, "--differences")
    assert done.returncode == 0, done.stderr
    assert sum(api.kite.history_calls.values()) > calls  # it fetched again
    printed = json.loads(done.stdout)
    answer = (await api.client.get("/api/reconcile", params={"date": day, "differences": "true"})).json()
    assert printed == answer
    assert len(printed["differences"]) == 7
    stored = await asyncio.to_thread(run, "--date", day, "--no-run")
    assert stored.returncode == 0 and json.loads(stored.stdout)["runs"] == answer["runs"]
    bad = await asyncio.to_thread(run, "--date", "27-11-2026", "--no-run")
    assert bad.returncode == 1 and "--date must be YYYY-MM-DD" in bad.stderr


async def test_a_reconciled_day_is_not_due_again(api: Api) -> None:
    """After the first test (same database): the day it reconciled is done; forgetting its run
    makes it due again, and nothing is due before its sessions ended."""
    pool = api.runtime.pool
    day = await pool.fetchval("SELECT max(day) FROM reconcile_runs")
    ended = await pool.fetchval(
        "SELECT max(upper(session)) FROM market_sessions WHERE calendar = 'NSE' AND day = $1", day
    )
    assert await due_day(pool, "kite", ended) is None
    await pool.execute("UPDATE reconcile_runs SET finished_at = NULL WHERE day = $1", day)
    assert await due_day(pool, "kite", ended) == day
    assert await due_day(pool, "kite", ended - timedelta(seconds=1)) != day
    assert await due_day(pool, "fyers", ended) == day  # each broker reconciles on its own
