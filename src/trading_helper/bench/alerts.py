"""``trading-helper bench alerts``: what evaluating alert rules costs, and how fast one arrives.

1. **Evaluation cost per tick** (pure, no I/O): ``rules`` random rules (tick rules on LTP, %
   change, volume and OI; 1m/5m candle rules on close, EMA, RSI, crossings, one instrument against
   another) over ``instruments`` simulated instruments, fed random ticks in frames of 10. The
   reference, measured in the same run, is decoding the same frames from the live channel's
   encoding (``codec.decode_ticks``), which every live consumer pays per tick anyway.
2. **Tick-receive-to-webhook latency**, end to end: a throwaway database (``th_bench_<random>``,
   dropped afterwards) holding the rules, the real Redis (a random channel), the alert service's
   two tasks, and a webhook receiver on 127.0.0.1. Ticks are published at ``rate`` ticks/s; a few
   rules (``firing``) fire about once a second each, the rest never do but are evaluated on every
   tick. Latency: the receiver's arrival time minus the tick's receive time (set when published).
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trading_helper.alerts.engine import Engine
from trading_helper.alerts.rules import parse_rule
from trading_helper.alerts.service import AlertService
from trading_helper.bench.query import percentile
from trading_helper.bench.scratch import scratch_database
from trading_helper.brokers.sim import sim_instruments
from trading_helper.config import Settings
from trading_helper.ingest import codec
from trading_helper.ingest.redisconn import redis_client
from trading_helper.models import Tick
from trading_helper.runner import freeze_startup_heap
from trading_helper.storage import sql_alerts
from trading_helper.storage.db import create_pool
from trading_helper.storage.instruments import lookup_tokens, sync_instruments
from trading_helper.timeframes import IST

Progress = Callable[[str, float], None]
FRAME = 10
SECRET = "bench-alerts-secret"


def random_rule_bodies(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """Rules that evaluate on every tick of their instrument but (by their thresholds) never fire."""
    bodies: list[dict[str, Any]] = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            body = {"on": "tick", "left": "ltp", "op": rng.choice([">", "crosses_above"]), "value": 1e9}
        elif kind == 1:
            body = {"on": "tick", "left": "change_pct", "op": "<", "value": -99.0}
        elif kind == 2:
            body = {"on": "tick", "left": rng.choice(["volume", "oi"]), "op": ">=", "value": 1e15}
        elif kind == 3:
            body = {"on": rng.choice(["1m", "5m"]), "left": "ema:20", "op": ">", "value": 1e9}
        else:
            body = {"on": "1m", "left": "rsi:14", "op": "crosses_above", "value": 101.0}
        bodies.append({**body, "repeat": "every", "cooldown_s": 0})
    return bodies


def _ticks(iids: list[int], count: int, rng: random.Random, start: datetime) -> list[Tick]:
    out: list[Tick] = []
    volume = dict.fromkeys(iids, 0)
    for i in range(count):
        iid = rng.choice(iids)
        volume[iid] += rng.randint(1, 20)
        at = start + timedelta(milliseconds=i)
        price = 100.0 + rng.gauss(0, 1)
        out.append(Tick(iid, at, at, price, 5, volume[iid], None, 1000, trade_ts=at))
    return out


def evaluation_cost(rules: int, instruments: int, ticks: int) -> dict[str, Any]:
    rng = random.Random(3)
    iids = list(range(1, instruments + 1))
    engine = Engine(prev_close=dict.fromkeys(iids, 100.0))
    for n, body in enumerate(random_rule_bodies(rules, rng)):
        engine.add(parse_rule(body, rule_id=n + 1, instrument_id=rng.choice(iids)))
    start = datetime(2026, 3, 2, 9, 15, tzinfo=IST)
    all_ticks = _ticks(iids, ticks, rng, start)
    frames = [codec.encode_ticks(all_ticks[i : i + FRAME]) for i in range(0, len(all_ticks), FRAME)]
    began = time.perf_counter()
    decoded = [codec.decode_ticks(f) for f in frames]
    decode_s = time.perf_counter() - began
    fired = 0
    began = time.perf_counter()
    for frame in decoded:
        fired += len(engine.on_ticks(frame, frame[-1].received_ts))
    eval_s = time.perf_counter() - began
    return {
        "rules": rules,
        "instruments": instruments,
        "ticks": ticks,
        "fired": fired,
        "us_per_tick": round(eval_s / ticks * 1e6, 2),
        "reference_decode_us_per_tick": round(decode_s / ticks * 1e6, 2),
        "x_reference": round(eval_s / decode_s, 2),
    }


class _Receiver:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.seen: set[str] = set()

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            arrived = datetime.now(UTC)
            body = json.loads(await request.body())
            key = request.headers["Idempotency-Key"]
            if key not in self.seen and body.get("tick_received_at"):
                self.seen.add(key)
                sent = datetime.fromisoformat(body["tick_received_at"])
                self.latencies_ms.append((arrived - sent).total_seconds() * 1000)
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


async def latency(
    settings: Settings,
    *,
    rules: int,
    instruments: int,
    rate: float,
    seconds: float,
    firing: int,
    progress: Progress,
) -> dict[str, Any]:
    receiver = _Receiver()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(receiver.app(), log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    hook = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    settings = settings.model_copy(update={"ALERT_WEBHOOK_SECRET": SecretStr(SECRET)})
    channel = f"th:live:bench:{uuid.uuid4().hex[:8]}"
    redis = redis_client(settings.REDIS_URL)
    rng = random.Random(5)
    try:
        async with scratch_database(settings.DATABASE_URL) as dsn:
            pool = await create_pool(dsn, min_size=2, max_size=8)
            try:
                async with pool.acquire() as conn:
                    items = sim_instruments(instruments)
                    await sync_instruments(conn, "sim", items)
                    iids = sorted(
                        (await lookup_tokens(conn, "sim", [i.broker_ids["sim"] for i in items])).values()
                    )
                    bodies = random_rule_bodies(rules - firing, rng)
                    # firing rules: LTP above 100 (half the ticks), at most once a second each
                    channels = [{"type": "webhook", "target": hook}]
                    bodies += [
                        {
                            "on": "tick",
                            "left": "ltp",
                            "op": ">",
                            "value": 100.0,
                            "repeat": "every",
                            "cooldown_s": 1,
                            "channels": channels,
                        }
                        for _ in range(firing)
                    ]
                    for n, body in enumerate(bodies):
                        iid = iids[n % len(iids)]
                        await conn.execute(sql_alerts.INSERT_RULE, iid, None, json.dumps(body), True)
                service = AlertService(settings, pool, redis, None, channel=channel)
                tasks = [
                    asyncio.create_task(service.evaluate()),
                    asyncio.create_task(service.deliver_triggers()),
                ]
                await asyncio.wait_for(service.listening.wait(), 10)
                freeze_startup_heap()  # as serve does once it has started
                published, began = 0, time.perf_counter()
                total = int(rate * seconds)
                volume = dict.fromkeys(iids, 0)
                while published < total:
                    due = int((time.perf_counter() - began) * rate)
                    while published < min(due, total):
                        now = datetime.now(UTC)
                        frame = []
                        for _ in range(min(FRAME, total - published)):
                            iid = iids[published % len(iids)]
                            volume[iid] += 5
                            price = 100.0 + rng.choice([-0.5, 0.5])
                            frame.append(Tick(iid, now, now, price, 5, volume[iid], None, 1000, trade_ts=now))
                            published += 1
                        await redis.publish(channel, codec.encode_ticks(frame))
                    progress(f"publishing at {rate:.0f} ticks/s", published / total)
                    await asyncio.sleep(0.005)
                elapsed = time.perf_counter() - began
                await asyncio.sleep(1.0)  # the last deliveries
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                await pool.close()
    finally:
        server.should_exit = True
        await asyncio.wait({serving}, timeout=3)
        await redis.aclose()
    lat = receiver.latencies_ms
    return {
        "rules": rules,
        "firing_rules": firing,
        "ticks_per_second": round(published / elapsed, 1),
        "seconds": round(elapsed, 1),
        "deliveries": len(lat),
        "p50_ms": round(percentile(lat, 0.5), 2) if lat else None,
        "p99_ms": round(percentile(lat, 0.99), 2) if lat else None,
        "max_ms": round(max(lat), 2) if lat else None,
        "target_p99_ms": 100,
    }


def run_alerts_bench(
    settings: Settings, *, rules: int, instruments: int, rate: float, seconds: float, progress: Progress
) -> dict[str, Any]:
    progress("evaluation cost", 0.0)
    cost = evaluation_cost(rules, instruments, 50_000)
    firing = max(1, min(50, rules // 20))
    end_to_end = asyncio.run(
        latency(
            settings,
            rules=rules,
            instruments=instruments,
            rate=rate,
            seconds=seconds,
            firing=firing,
            progress=progress,
        )
    )
    return {"evaluation": cost, "latency": end_to_end}
