"""``trading-helper bench options``: the option chain's compute time and the API's chain latency.

1. IV and Greeks (delta, gamma, theta, vega) of a chain of ``strikes`` strikes (CE and PE each),
   through ``options/black76.py``, and the whole ``compute_chain`` (forward, analytics, document);
   the reference, in the same run, is QuantLib's Black-76 (C++) looped over the same options.
2. ``GET /api/options/chain`` end to end on a throwaway database (``th_bench_<random>``, dropped
   afterwards) and a throwaway Redis hash of quotes (deleted afterwards): uvicorn on 127.0.0.1,
   one keep-alive connection, a snapshot of the chain written first (the OI change's baseline,
   as for a followed chain); the reference, in the same run and over the same connection, is
   ``GET /api/quotes/{instrument}`` (one quote from Redis through the same stack). Besides the
   wall-clock percentiles, this process's CPU time per request (server and client; PostgreSQL's
   and Redis's not counted), the figure that moves least with a shared machine's load.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from pydantic import SecretStr

from trading_helper import clock
from trading_helper.api.app import create_app
from trading_helper.api.runtime import Runtime
from trading_helper.bench.query import _KeepAliveClient, _serve, percentile
from trading_helper.bench.scratch import scratch_database
from trading_helper.config import Settings
from trading_helper.errors import ConfigError
from trading_helper.ingest import codec
from trading_helper.ingest.redisconn import redis_client
from trading_helper.models import Instrument, Tick
from trading_helper.options import black76, history
from trading_helper.options.chain import ChainInputs, OptionQuote, compute_chain
from trading_helper.options.expiry import years_to_expiry
from trading_helper.options.live import live_chain, underlying_of
from trading_helper.runner import freeze_startup_heap
from trading_helper.storage.db import create_pool
from trading_helper.storage.instruments import get_instrument, sync_instruments
from trading_helper.timeframes import IST

FORWARD = 24_000.0
STEP = 25.0  # 200 strikes span +-10 % around the forward


def _smile(k: float) -> float:
    x = math.log(k / FORWARD)
    return 0.13 + 0.5 * x * x - 0.04 * x


def _quotes(strikes: int, t: float, rate: float) -> list[OptionQuote]:
    ks = [FORWARD + STEP * (i - strikes // 2) for i in range(strikes)]
    out = []
    for n, k in enumerate(ks):
        for kind in ("CE", "PE"):
            p = float(black76.price(kind[0].lower(), FORWARD, k, t, rate, _smile(k)))
            out.append(
                OptionQuote(
                    2 * n + (kind == "PE"),
                    f"B{int(k)}{kind}",
                    k,
                    kind,
                    ltp=p,
                    bid=p * 0.999,
                    ask=p * 1.001,
                    oi=75 * (n + 1),
                    volume=n,
                )
            )
    return out


def _best_ms(call: Any, repeats: int) -> tuple[float, float]:
    call()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return percentile(times, 0.5), min(times)


def compute_bench(strikes: int, repeats: int, rate: float) -> dict[str, Any]:
    try:
        import QuantLib as ql
    except ImportError as exc:
        raise ConfigError(
            "bench options measures against QuantLib: pip install QuantLib (the test extra)"
        ) from exc
    as_of = datetime(2026, 12, 2, 11, 0, tzinfo=IST)
    expiry = as_of.date() + timedelta(days=6)
    t = years_to_expiry("NFO", expiry, as_of)
    quotes = _quotes(strikes, t, rate)
    flags = np.array(["c" if q.option_type == "CE" else "p" for q in quotes])
    ks = np.array([q.strike for q in quotes])
    prices = np.array([((q.bid or 0) + (q.ask or 0)) / 2 for q in quotes])

    def ours() -> None:
        iv = black76.implied_vol(prices, FORWARD, ks, t, rate, flags).iv
        black76.greeks(flags, FORWARD, ks, t, rate, iv)

    inputs = ChainInputs("NSE:BENCH", "NFO", expiry, as_of, rate, quotes, spot=FORWARD)
    df = math.exp(-rate * t)
    legs = [
        (ql.Option.Call if f == "c" else ql.Option.Put, float(k), float(p))
        for f, k, p in zip(flags, ks, prices, strict=True)
    ]

    refused = 0

    def reference() -> None:
        nonlocal refused
        refused = 0
        for kind, k, p in legs:
            try:
                sd = ql.blackFormulaImpliedStdDev(kind, k, FORWARD, p, df, 0.0, ql.nullDouble(), 1e-12, 200)
            except RuntimeError:  # QuantLib refuses a price a rounding below intrinsic
                refused += 1
                continue
            calc = ql.BlackCalculator(ql.PlainVanillaPayoff(kind, k), FORWARD, sd, df)
            calc.delta(FORWARD), calc.gamma(FORWARD), calc.theta(FORWARD, t), calc.vega(t)

    ours_p50, ours_min = _best_ms(ours, repeats)
    chain_p50, _ = _best_ms(lambda: compute_chain(inputs), repeats)
    ref_p50, _ = _best_ms(reference, max(5, repeats // 10))
    return {
        "strikes": strikes,
        "options": len(quotes),
        "iv_greeks_p50_ms": round(ours_p50, 3),
        "iv_greeks_min_ms": round(ours_min, 3),
        "iv_greeks_target_ms": 5.0,
        "compute_chain_p50_ms": round(chain_p50, 3),
        "reference": "QuantLib Black-76 looped per option (IV + 4 Greeks)",
        "reference_p50_ms": round(ref_p50, 3),
        "reference_refused": refused,
        "iv_greeks_vs_reference": round(ours_p50 / ref_p50, 3),
    }


def nifty_chain(expiry: date, strikes: Sequence[float]) -> list[Instrument]:
    """NSE:NIFTY 50 and its options of ``expiry`` at ``strikes``, as Kite lists them (the
    derivatives named NIFTY on NFO), each with a simulator token."""
    out = [
        Instrument(
            exchange="NSE",
            tradingsymbol="NIFTY 50",
            name="NIFTY 50",
            segment="INDICES",
            instrument_type="INDEX",
        )
    ]
    out += [
        Instrument(
            exchange="NFO",
            tradingsymbol=f"NIFTY{expiry:%y%m%d}{int(k)}{kind}",
            name="NIFTY",
            segment="NFO-OPT",
            instrument_type=kind,
            expiry=expiry,
            strike=k,
            option_type=kind,
            lot_size=75,
        )
        for k in strikes
        for kind in ("CE", "PE")
    ]
    for n, inst in enumerate(out):
        inst.broker_ids = {"sim": str(800_000 + n)}
    return out


async def api_bench(settings: Settings, strikes: int, samples: int) -> dict[str, Any]:
    now = clock.now()
    expiry = now.astimezone(IST).date() + timedelta(days=6)
    t = years_to_expiry("NFO", expiry, now)
    key = f"th:quotes:bench:{uuid.uuid4().hex[:10]}"
    redis = redis_client(settings.REDIS_URL)
    token = "bench-" + uuid.uuid4().hex
    app_settings = settings.model_copy(update={"API_TOKEN": SecretStr(token), "BROKER": "sim"})
    try:
        async with scratch_database(settings.DATABASE_URL) as dsn:
            database = urlsplit(dsn).path.lstrip("/")
            pool = await create_pool(dsn, min_size=2, max_size=4)
            try:
                async with pool.acquire() as conn:
                    await sync_instruments(
                        conn,
                        "sim",
                        nifty_chain(expiry, [FORWARD + STEP * (i - strikes // 2) for i in range(strikes)]),
                    )
                    rows = await conn.fetch("SELECT id, tradingsymbol, strike, option_type FROM instruments")
                ticks = {}
                for r in rows:
                    if r["option_type"] is None:
                        ticks[r["id"]] = Tick(r["id"], now, now, FORWARD * 0.999)
                        spot_id = r["id"]
                        continue
                    p = float(
                        black76.price(
                            r["option_type"][0].lower(),
                            FORWARD,
                            r["strike"],
                            t,
                            settings.OPTIONS_RATE,
                            _smile(r["strike"]),
                        )
                    )
                    ticks[r["id"]] = Tick(
                        r["id"],
                        now,
                        now,
                        p,
                        volume=1000,
                        open_interest=75_000,
                        bid_price=p * 0.999,
                        ask_price=p * 1.001,
                    )
                await redis.hset(key, mapping={str(i): codec.encode_quote(tk) for i, tk in ticks.items()})
                # a snapshot of the chain this minute, as the recorder writes: the timed chain
                # measures its OI change and build-up against it, as a followed chain's does
                async with pool.acquire() as conn:
                    u = underlying_of(await get_instrument(conn, spot_id))
                    minute = now.replace(second=0, microsecond=0)
                    first = await live_chain(
                        pool, redis, u, expiry, as_of=minute, rate=settings.OPTIONS_RATE, quotes_key=key
                    )
                    await history.write_snapshot(conn, spot_id, first.doc)
                app = create_app(Runtime(app_settings, pool, redis), quotes_key=key)
                server, task, url = await _serve(app)
                freeze_startup_heap()  # as serve does once it has started
                try:
                    client = await _KeepAliveClient.open(url, {"Authorization": f"Bearer {token}"})
                    try:
                        chain_ms, chain_cpu = await _timed_get(
                            client, f"/api/options/chain?underlying=id:{spot_id}", samples
                        )
                        # the reference: one quote through the same stack (it reads th:quotes itself)
                        await redis.hset("th:quotes", str(spot_id), codec.encode_quote(ticks[spot_id]))
                        quote_ms, quote_cpu = await _timed_get(client, f"/api/quotes/id:{spot_id}", samples)
                    finally:
                        await client.close()
                finally:
                    server.should_exit = True
                    await task
            finally:
                await pool.close()
    finally:
        await redis.delete(key)
        await redis.aclose()
    return {
        "database": f"{database} (dropped)",
        "quotes_key": f"{key} (deleted)",
        "api_chain_strikes": strikes,
        "api_chain_p50_ms": round(percentile(chain_ms, 0.5), 3),
        "api_chain_p99_ms": round(percentile(chain_ms, 0.99), 3),
        "api_chain_target_p50_ms": 20.0,
        "api_chain_baseline": "a snapshot of the same chain this minute (OI change, build-up)",
        "api_reference": "GET /api/quotes/{instrument} on the same connection",
        "api_reference_p50_ms": round(percentile(quote_ms, 0.5), 3),
        "api_chain_vs_reference": round(percentile(chain_ms, 0.5) / percentile(quote_ms, 0.5), 2),
        # this process's CPU time per request (the server's and the client's, not PostgreSQL's or
        # Redis's): on a shared machine the wall-clock figures move with the other processes
        "api_chain_cpu_ms": round(chain_cpu, 3),
        "api_reference_cpu_ms": round(quote_cpu, 3),
        "api_chain_cpu_vs_reference": round(chain_cpu / quote_cpu, 2),
    }


async def _timed_get(client: _KeepAliveClient, path: str, samples: int) -> tuple[list[float], float]:
    """Each request's wall time (ms), and this process's CPU time per request (ms)."""
    for _ in range(10):
        status, body = await client.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {body[:200]!r}")
    times = []
    cpu = time.process_time()
    for _ in range(samples):
        began = time.perf_counter()
        await client.get(path)
        times.append((time.perf_counter() - began) * 1000)
    return times, (time.process_time() - cpu) / samples * 1000


async def run_options_bench(settings: Settings, *, strikes: int, samples: int) -> dict[str, Any]:
    result = compute_bench(strikes, samples, settings.OPTIONS_RATE)
    result.update(await api_bench(settings, strikes, samples))
    result["measured_at"] = clock.now().isoformat(timespec="seconds")
    return result
