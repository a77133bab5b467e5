"""``trading-helper bench soak``: N simulated trading days through the real path, with faults.

The path: the Kite stand-in (binary ticker frames, full mode, heartbeats; historical REST) ->
``trading-helper serve`` as a child process (KiteBroker -> receiver -> its own Redis with AOF ->
writer -> a fresh database on the shared PostgreSQL, reached through a TCP fault proxy) -> candles
read back through the API. Everyone sees one simulated clock (``TH_CLOCK=@file``, see
:mod:`trading_helper.clock`); nights are skipped by jumping it.

Faults per day (simulated IST): token expiry at 06:00 and a re-login 5 s later; a reconnect in the
pre-open (09:05) and mid-session (10:00); a Redis restart (10:45); PostgreSQL down 30 s (11:15);
a SIGKILL of serve and a restart (13:00); an API restart (SIGTERM, start again; 14:00); a poison
row (a trade at a price a CHECK constraint refuses; 14:45); late ticks all day (up to 3 s).
Each fault runs with the clock at real speed, after the fast replay's backlog is worked off (the
last trade sent is stored: ``settled_s``), so it meets ticks in flight at real speed.

Checks: every received tick stored exactly once (the stand-in knows what it sent; ticks sent on a
stopped serve's connections after the newest one in its Redis stream were never acknowledged, so
they count as in flight, not as received); every fully captured candle of the five timeframes, read through the
API, equal to the oracle over the trades; every hole fetched from the broker, none twice; the
memory of each long-lived process (serve, Redis) on its own.

The faults are in :mod:`.faults`, the read-back and the accounts in :mod:`.readback`
(:mod:`.candlecheck`, :mod:`.holes`), the memory in :mod:`.memory`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from trading_helper import clock
from trading_helper.bench.faultproxy import FaultProxy
from trading_helper.bench.scratch import scratch_database
from trading_helper.bench.soak.faults import SCHEDULE, TICK_STREAM, Fault
from trading_helper.bench.soak.kite_standin import KiteStandIn
from trading_helper.bench.soak.market import POISON_PRICE, Market, SoakTick
from trading_helper.bench.soak.memory import SAMPLE_EVERY_S, MemoryLog
from trading_helper.bench.soak.oracle import IST
from trading_helper.bench.soak.processes import RedisServer, ServeProcess, free_port
from trading_helper.bench.soak.readback import ReadBack
from trading_helper.brokers.tokens import save_token
from trading_helper.candles.calendar import year_sessions
from trading_helper.config import Settings
from trading_helper.errors import ConfigError

API_KEY = "soak_api_key"
_POISON = f"ALTER TABLE tick_data ADD CONSTRAINT soak_poison_price CHECK (ltp <> {POISON_PRICE})"
_INSTRUMENT_IDS = "SELECT broker_token, instrument_id FROM instrument_broker_ids WHERE broker = 'kite'"


def last_trading_days(n: int, before: datetime) -> list[date]:
    """The last ``n`` NSE trading days whose session ended before ``before``."""
    days: list[date] = []
    year = before.astimezone(IST).year
    while len(days) < n:
        days = [d for d, _, close in year_sessions("NSE", year) if close < before] + days
        year -= 1
    return days[-n:]


def _with_port(dsn: str, port: int) -> str:
    p = urlsplit(dsn)
    host = p.hostname or "127.0.0.1"
    auth = p.netloc.rsplit("@", 1)[0] + "@" if "@" in p.netloc else ""
    return urlunsplit((p.scheme, f"{auth}{host}:{port}", p.path, p.query, p.fragment))


@dataclass
class Soak(ReadBack):
    settings: Settings
    days: list[date]
    instruments: int
    speed: float
    progress: Callable[[str, float], None] | None = None
    #: the kinds of SCHEDULE to inject (default: all)
    enabled: frozenset[str] = frozenset(kind for _, kind in SCHEDULE)
    faults: list[Fault] = field(default_factory=list)
    stops: list[tuple[float, float, frozenset[int]]] = field(default_factory=list)
    stop_lags: list[float | None] = field(default_factory=list)
    memory: MemoryLog = field(default_factory=MemoryLog)
    api_candles: dict[tuple[str, int, datetime], dict[str, Any]] = field(default_factory=dict)
    service_status: dict[int, dict[str, Any]] = field(default_factory=dict)
    api_errors: Counter[str] = field(default_factory=Counter)

    # --- the clock -------------------------------------------------------------------------------
    def _set_clock(self, sim: datetime, speed: float | None = None) -> None:
        self.sim = clock.SimClock(sim, speed or self.speed, time.time())
        tmp = self.clock_file.with_suffix(".new")
        tmp.write_text(self.sim.spec())
        os.replace(tmp, self.clock_file)

    def now(self) -> datetime:
        return self.sim.now()

    def _ist(self, day: date, hhmm: str) -> datetime:
        h, m = hhmm.split(":")
        return datetime(day.year, day.month, day.day, int(h), int(m), tzinfo=IST)

    async def _until(self, sim: datetime) -> None:
        # a clock to wait for, not an event: polling it is the point
        while (left := (sim - self.now()).total_seconds()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(0.5, left / self.sim.speed))

    # --- running ---------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        poison = (
            {d: int(self._ist(d, "14:45").timestamp()) for d in self.days}
            if "poison_row" in self.enabled
            else {}
        )
        self.market = Market(self.instruments, self.days, poison=poison)
        self.access_token = "soak-token-0"
        with tempfile.TemporaryDirectory(prefix="th-soak-") as tmp:
            self.workdir = Path(tmp)
            self.clock_file = self.workdir / "clock"
            self._set_clock(self._ist(self.days[0], "05:50"))
            self._note(f"working in {tmp}", 0, self.days[0])
            async with scratch_database(self.settings.DATABASE_URL, prefix="th_soak") as dsn:
                self.dsn = dsn
                target = urlsplit(dsn)
                async with (
                    KiteStandIn(self.market, api_key=API_KEY, access_token=self.access_token) as kite,
                    FaultProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy,
                ):
                    self.kite, self.proxy = kite, proxy
                    self.db = await asyncpg.connect(dsn)
                    self.redis = RedisServer(self.workdir)
                    await self.redis.start()
                    try:
                        await self._run_days()
                        result = await self._check()
                    finally:
                        if self.serve is not None:
                            await self.serve.stop()
                        await self.redis.kill()
                        await self.db.close()
        result["seconds"] = round(time.monotonic() - started, 1)
        return result

    serve: ServeProcess | None = None

    async def _start_serve(self) -> None:
        token_dir = self.workdir / "tokens"
        save_token(Settings(TOKEN_DIR=token_dir), "kite", self.access_token)
        port = self.serve.port if self.serve is not None else free_port()
        self.api_token = getattr(self, "api_token", secrets.token_urlsafe(16))
        env = {
            "DATABASE_URL": _with_port(self.dsn, self.proxy.port),
            "REDIS_URL": self.redis.url,
            "BROKER": "kite",
            "KITE_API_KEY": API_KEY,
            "KITE_API_URL": self.kite.api_url,
            "KITE_WS_URL": self.kite.ws_url,
            "KITE_ACCESS_TOKEN": "",
            "TOKEN_DIR": str(token_dir),
            "API_TOKEN": self.api_token,
            "API_HOST": "127.0.0.1",
            "TH_CLOCK": f"@{self.clock_file}",
            "LOG_LEVEL": "WARNING",
            "REFRESH_INTERVAL_S": "1",
            "TICK_STREAM": TICK_STREAM,
            # no reconciliation: it fetches a finished day's 1m history again by design (to
            # compare with the live candles), which the history check would count as a backfill
            # asking twice; a serve restarted after 16:00 (a fault slipping on a loaded machine,
            # at 10 simulated minutes a second) reconciled the day. It has tests of its own.
            "RECONCILE_AFTER_MINUTES": "0",
        }
        if self.serve is None:
            self.serve = ServeProcess(self.workdir, env, port)
        await self.serve.start()
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            timeout=60,
            headers={"Authorization": f"Bearer {self.api_token}"},
        )

    async def _run_days(self) -> None:
        await self.db.execute(_POISON)
        await self._start_serve()
        (await self.http.post("/api/instruments/sync")).raise_for_status()
        tokens = [str(i.token) for i in self.market.instruments]
        (await self.http.post("/api/instruments/subscribe", json={"instruments": tokens})).raise_for_status()
        self.ids = {int(r["broker_token"]): r["instrument_id"] for r in await self.db.fetch(_INSTRUMENT_IDS)}
        tasks = [
            asyncio.create_task(loop()) for loop in (self._send_loop, self._status_loop, self._memory_loop)
        ]
        try:
            for n, day in enumerate(self.days):
                await self._run_day(n, day)
            # the checks read at real speed: the last day's 1d bucket stays unfinished, as when it was read
            self._set_clock(self.now(), 1.0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _status_loop(self) -> None:
        """The service's own counters (received, rejected by reason), last seen per serve process."""
        while True:
            await asyncio.sleep(1.0)
            if self.serve is None:
                continue
            starts = self.serve.starts
            try:
                resp = await self.http.get("/api/status", timeout=5)
                ingest = resp.json().get("ingest") if resp.status_code == 200 else None
            except (httpx.HTTPError, ValueError, RuntimeError):
                continue
            if isinstance(ingest, dict) and starts == self.serve.starts:
                self.service_status[starts] = ingest

    async def _send_loop(self) -> None:
        queues = {d: (rows, 0) for d, rows in self.market.ticks.items()}
        while True:
            now = self.now().timestamp()
            due: list[SoakTick] = []
            for d, (rows, i) in queues.items():
                j = i
                while j < len(rows) and rows[j].send_at <= now:
                    j += 1
                if j > i:
                    due.extend(rows[i:j])
                    queues[d] = (rows, j)
            if due:
                await self.kite.send(due)
            await asyncio.sleep(0.02)

    def _note(self, text: str, day_index: int, day: date) -> None:
        if self.progress is not None and hasattr(self, "sim"):
            sim = self.now().astimezone(IST)
            frac = (sim - self._ist(day, "05:50")).total_seconds() / (10.5 * 3600)
            self.progress(
                f"day {day_index + 1}/{len(self.days)} {day} {sim:%H:%M} IST: {text}",
                (day_index + min(1.0, max(0.0, frac))) / len(self.days),
            )

    async def _run_day(self, n: int, day: date) -> None:
        if n:
            self._set_clock(self._ist(day, "05:55"))
        for hhmm, kind in SCHEDULE:
            at = self._ist(day, hhmm)
            if kind == "reconnect_preopen":
                await self._jump_to(self._ist(day, "08:59"))
            if kind not in self.enabled:
                continue
            await self._until(at)
            self._note(kind, n, day)
            fault = Fault(kind, self.now().astimezone(IST).isoformat(timespec="seconds"))
            self.faults.append(fault)
            # real-time waits (an outage of 30 s, a recovery) run the clock at real speed, so that
            # they do not eat the simulated day; the change of speed is seen as a change, not a jump
            self._set_clock(self.now(), 1.0)
            try:
                await self._settle(fault, day)
                await getattr(self, f"_fault_{kind}")(fault, day)
            finally:
                self._set_clock(self.now(), self.speed)
            self._note(f"{kind}: recovered in {fault.recovered_s} s {fault.note}", n, day)
        await self._until(self._ist(day, "15:31"))
        self._note("draining", n, day)
        await self._drain(day)
        await self._jump_to(self._ist(day, "16:00"))
        self._note("reading candles", n, day)
        await self._read_day(day)

    async def _jump_to(self, sim: datetime) -> None:
        """Skip quiet time (nothing is sent before ``sim``): everyone sees the jump within ~0.5 s."""
        if sim > self.now():
            self._set_clock(sim)
            await asyncio.sleep(0.6)

    async def _memory_loop(self) -> None:
        """RSS of serve and Redis, per process (:mod:`~trading_helper.bench.soak.memory`)."""
        while True:
            sim = self.now()
            if self.serve is not None:
                self.memory.sample("serve", self.serve.starts, self.serve.pid, self.serve.started_at, sim)
            self.memory.sample("redis", self.redis.starts, self.redis.pid, self.redis.started_at, sim)
            await asyncio.sleep(SAMPLE_EVERY_S)


async def run_soak(
    settings: Settings,
    *,
    days: int,
    instruments: int,
    speed: float,
    faults: frozenset[str] | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    # the day of the simulated week closest to now ends before now: the clock never passes real time
    # (raw ticks are kept 7 days by the database's clock, and MAX_TICK_AGE is 6 days)
    chosen = last_trading_days(days, clock.now() - timedelta(hours=1))
    kinds = frozenset(kind for _, kind in SCHEDULE)
    if faults is not None and not faults <= kinds:
        raise ConfigError(f"unknown fault kinds {sorted(faults - kinds)}; known: {sorted(kinds)}")
    soak = Soak(settings, chosen, instruments, speed, progress, faults if faults is not None else kinds)
    # SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C: the children and the database go too
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main is not None:
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        return await soak.run()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
