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

Checks: every received tick stored exactly once (the stand-in knows what it sent; ticks sent in
the last half second before a SIGKILL were never acknowledged, so they count as in flight, not as
received); every fully captured candle of the five timeframes, read through the API, equal to the
oracle over the trades; every hole fetched from the broker, none twice; RSS of serve.
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
from trading_helper.bench.soak.kite_standin import KiteStandIn
from trading_helper.bench.soak.market import POISON_PRICE, SESSION, Market, SoakTick
from trading_helper.bench.soak.oracle import IST, WIDTHS, RawTick, bucket_of, candles
from trading_helper.bench.soak.processes import RedisServer, ServeProcess, free_port, rss_mb
from trading_helper.brokers.tokens import save_token
from trading_helper.candles.calendar import year_sessions
from trading_helper.config import Settings
from trading_helper.errors import ConfigError

API_KEY = "soak_api_key"
#: ticks sent this long (real seconds) before a SIGKILL may still sit in a socket buffer or in the
#: process: never acknowledged, so neither received nor lost (nor is anything sent on the killed
#: process's sockets after the kill, or on a stopping process's sockets after its SIGTERM)
IN_FLIGHT_S = 0.5
#: the target: every fault recovered within 30 s of its cause ending
RECOVERY_TIMEOUT_S = 30.0
PG_DOWN_S = 30.0

#: where a received tick lands, each row keyed by (instrument, feed time in epoch seconds): trades in
#: tick_data (its feed time in exchange_time since migration 6), updates with no new trade in
#: quote_updates; a table missing from this schema version is skipped
_LANDINGS: tuple[tuple[str, str], ...] = (
    (
        "tick_data",
        "SELECT instrument_id, extract(epoch FROM coalesce(exchange_time, time))::bigint AS epoch, "
        "count(*) AS n FROM tick_data GROUP BY 1, 2",
    ),
    (
        "quote_updates",
        "SELECT instrument_id, extract(epoch FROM time)::bigint AS epoch, count(*) AS n "
        "FROM quote_updates GROUP BY 1, 2",
    ),
)
#: rows the database refused, kept aside (dead letters)
_DEAD_LETTERED = "SELECT count(*) FROM tick_rejects"
_EXISTS = "SELECT to_regclass($1) IS NOT NULL"
_STORED_SINCE = "SELECT EXISTS (SELECT 1 FROM tick_data WHERE time >= $1)"
_POISON = f"ALTER TABLE tick_data ADD CONSTRAINT soak_poison_price CHECK (ltp <> {POISON_PRICE})"
_INSTRUMENT_IDS = "SELECT broker_token, instrument_id FROM instrument_broker_ids WHERE broker = 'kite'"

#: (simulated IST time, fault kind), per day
SCHEDULE: tuple[tuple[str, str], ...] = (
    ("06:00", "token_expiry"),
    ("09:05", "reconnect_preopen"),
    ("10:00", "reconnect_session"),
    ("10:45", "redis_restart"),
    ("11:15", "postgres_down"),
    ("13:00", "serve_sigkill"),
    ("14:00", "api_restart"),
    ("14:45", "poison_row"),
)


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
class Fault:
    kind: str
    at: str
    recovered_s: float | None = None
    note: str = ""

    def out(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "at": self.at, "recovered_s": self.recovered_s}
        if self.note:
            d["note"] = self.note
        return d


@dataclass
class Soak:
    settings: Settings
    days: list[date]
    instruments: int
    speed: float
    progress: Callable[[str, float], None] | None = None
    #: the kinds of SCHEDULE to inject (default: all)
    enabled: frozenset[str] = frozenset(kind for _, kind in SCHEDULE)
    faults: list[Fault] = field(default_factory=list)
    #: (real time, lead in seconds, connection numbers open then) of each SIGKILL or SIGTERM of serve
    stops: list[tuple[float, float, frozenset[int]]] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    #: [serve start number, simulated IST time, MiB] at every fault and the end of every day
    rss_samples: list[list[Any]] = field(default_factory=list)

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
            "TICK_STREAM": "th:soak:ticks",
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
        tasks = [asyncio.create_task(self._send_loop()), asyncio.create_task(self._status_loop())]
        try:
            for n, day in enumerate(self.days):
                await self._run_day(n, day)
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
                await getattr(self, f"_fault_{kind}")(fault, day)
            finally:
                self._set_clock(self.now(), self.speed)
            self._note(f"{kind}: recovered in {fault.recovered_s} s {fault.note}", n, day)
            self._sample_rss(first=kind == "reconnect_session")
        await self._until(self._ist(day, "15:31"))
        self._note("draining", n, day)
        await self._drain(day)
        await self._jump_to(self._ist(day, "16:00"))
        self._note("reading candles", n, day)
        await self._read_day(day)
        self._sample_rss()

    async def _jump_to(self, sim: datetime) -> None:
        """Skip quiet time (nothing is sent before ``sim``): everyone sees the jump within ~0.5 s."""
        if sim > self.now():
            self._set_clock(sim)
            await asyncio.sleep(0.6)

    def _sample_rss(self, first: bool = False) -> None:
        """RSS of serve; the series for start/end begins once a session is under way (day 1, 10:00)."""
        if (
            self.serve is not None
            and self.serve.pid is not None
            and (mb := rss_mb(self.serve.pid)) is not None
        ):
            self.rss_samples.append(
                [self.serve.starts, self.now().astimezone(IST).isoformat(timespec="minutes"), round(mb, 1)]
            )
            if first or self.rss:
                self.rss.append(mb)

    # --- faults ----------------------------------------------------------------------------------
    async def _recovered(
        self,
        cond: Callable[[], Any],
        since: float,
        timeout_s: float = RECOVERY_TIMEOUT_S,
    ) -> float | None:
        while time.monotonic() - since < timeout_s:
            ok = cond()
            if asyncio.iscoroutine(ok):
                ok = await ok
            if ok:
                return round(time.monotonic() - since, 2)
            await asyncio.sleep(0.1)
        return None

    def _all_live(self) -> bool:
        return self.kite.live_tokens() >= {i.token for i in self.market.instruments}

    async def _stored_since(self, sim: datetime) -> bool:
        try:
            return bool(await self.db.fetchval(_STORED_SINCE, sim))
        except (OSError, asyncpg.PostgresError):
            return False

    async def _fault_token_expiry(self, fault: Fault, day: date) -> None:
        self.access_token = f"soak-token-{day.isoformat()}"
        self.kite.expire_token(self.access_token)
        await asyncio.sleep(5)  # the trader logs in a little later
        save_token(Settings(TOKEN_DIR=self.workdir / "tokens"), "kite", self.access_token)  # as `login` would
        fault.recovered_s = await self._recovered(
            lambda: (
                self._all_live() and all(c.access_token == self.access_token for c in self.kite.connections)
            ),
            time.monotonic(),
        )
        if fault.recovered_s is None:
            fault.note = "the live feed did not come back after the re-login"

    async def _fault_reconnect_preopen(self, fault: Fault, day: date) -> None:
        self.kite.drop_connections()
        fault.recovered_s = await self._recovered(self._all_live, time.monotonic())

    _fault_reconnect_session = _fault_reconnect_preopen

    async def _fault_redis_restart(self, fault: Fault, day: date) -> None:
        await self.redis.kill()
        await self.redis.start()
        back = self.now() + timedelta(seconds=4)
        fault.recovered_s = await self._recovered(lambda: self._stored_since(back), time.monotonic())

    async def _fault_postgres_down(self, fault: Fault, day: date) -> None:
        self.proxy.cut()
        await asyncio.sleep(PG_DOWN_S)
        self.proxy.heal()
        back = self.now() + timedelta(seconds=4)
        fault.recovered_s = await self._recovered(lambda: self._stored_since(back), time.monotonic())

    async def _fault_serve_sigkill(self, fault: Fault, day: date) -> None:
        assert self.serve is not None
        self.stops.append((time.time(), IN_FLIGHT_S, frozenset(c.number for c in self.kite.connections)))
        await self.serve.kill()
        await self.http.aclose()
        await self._start_serve()
        back = self.now() + timedelta(seconds=4)
        fault.recovered_s = await self._recovered(lambda: self._stored_since(back), time.monotonic())

    async def _fault_api_restart(self, fault: Fault, day: date) -> None:
        assert self.serve is not None
        self.stops.append((time.time(), 0.0, frozenset(c.number for c in self.kite.connections)))
        clean = await self.serve.stop()
        await self.http.aclose()
        await self._start_serve()
        back = self.now() + timedelta(seconds=4)

        async def healthy() -> bool:
            try:
                ok = (await self.http.get("/health")).status_code == 200
            except httpx.HTTPError:
                return False
            return ok and await self._stored_since(back)

        fault.recovered_s = await self._recovered(healthy, time.monotonic())
        if not clean:
            fault.note = "serve did not stop within 15 s of SIGTERM (killed)"

    async def _fault_poison_row(self, fault: Fault, day: date) -> None:
        """Recovered: the trade sent after the poison (at the price the CHECK refuses) is stored."""
        poison = next((t for t in self.market.ticks[day] if t.trade and t.price == POISON_PRICE), None)
        since = time.monotonic()
        if (
            poison is None
            or await self._recovered(lambda: (poison.token, poison.epoch) in self.kite.sent, since) is None
        ):
            fault.note = "no poison trade was sent (the feed was down)"
            return
        after = datetime.fromtimestamp(poison.send_at + 1, IST)
        fault.recovered_s = await self._recovered(lambda: self._stored_since(after), time.monotonic())

    # --- reading back ----------------------------------------------------------------------------
    async def _drain(self, day: date) -> None:
        """Wait (bounded) until the day's last received tick is stored."""
        sent = [t for t in self.market.ticks[day] if (t.token, t.epoch) in self.kite.sent]
        if not sent:
            return
        last = max(t.epoch for t in sent)
        await self._recovered(lambda: self._stored_since(datetime.fromtimestamp(last, IST)), time.monotonic())
        await asyncio.sleep(3)  # candle refresh (every second on plain PostgreSQL)

    async def _read_day(self, day: date) -> None:
        start = datetime(day.year, day.month, day.day, 0, 15, tzinfo=IST)
        for inst in self.market.instruments:
            for tf in WIDTHS:
                resp = await self.http.get(
                    "/api/candles",
                    params={
                        "instrument": str(inst.token),
                        "interval": tf,
                        "from": start.isoformat(),
                        "to": (start + timedelta(days=1)).isoformat(),
                    },
                )
                if resp.status_code != 200:
                    self.api_errors[f"{resp.status_code}"] += 1
                    continue
                for c in resp.json()["candles"]:
                    self.api_candles[(tf, inst.token, datetime.fromisoformat(c["time"]))] = c

    api_candles: dict[tuple[str, int, datetime], dict[str, Any]] = field(default_factory=dict)
    service_status: dict[int, dict[str, Any]] = field(default_factory=dict)
    api_errors: Counter[str] = field(default_factory=Counter)

    # --- checks ----------------------------------------------------------------------------------
    async def _check(self) -> dict[str, Any]:
        history_before = len(self.kite.history)
        for day in self.days:  # a second read of every day must not reach the broker again
            await self._read_day(day)
        second_read_calls = len(self.kite.history) - history_before

        all_ticks = {(t.token, t.epoch): t for d in self.days for t in self.market.ticks[d]}
        sent = self.kite.sent
        in_flight = {
            k
            for k, (at, number) in sent.items()
            if any(number in numbers and at >= stop - lead for stop, lead, numbers in self.stops)
        }
        token_of = {iid: tok for tok, iid in self.ids.items()}
        rows: Counter[tuple[int, int]] = Counter()
        landed: dict[str, int] = {}
        for table, query in _LANDINGS:
            if not await self.db.fetchval(_EXISTS, table):
                continue
            try:
                found = await self.db.fetch(query)
            except asyncpg.UndefinedColumnError:  # tick_data before migration 6: no exchange_time
                found = await self.db.fetch(query.replace("coalesce(exchange_time, time)", "time"))
            landed[table] = sum(r["n"] for r in found)
            for r in found:
                rows[(token_of.get(r["instrument_id"], -1), r["epoch"])] += r["n"]
        stored = {k for k in rows if k in sent}
        received = (set(sent) - in_flight) | (in_flight & stored)
        dead = (
            await self.db.fetchval(_DEAD_LETTERED) if await self.db.fetchval(_EXISTS, "tick_rejects") else 0
        )
        missing = received - stored
        poison_sent = sum(1 for k in received if all_ticks[k].trade and all_ticks[k].price == POISON_PRICE)

        mismatches, checked, samples = self._check_candles(received, all_ticks)
        holes_unfetched, refetched = self._check_history(received, all_ticks)
        rss_start, rss_end = (self.rss[0], self.rss[-1]) if self.rss else (None, None)
        return {
            "days": len(self.days),
            "first_day": self.days[0].isoformat(),
            "last_day": self.days[-1].isoformat(),
            "instruments": self.instruments,
            "speed": self.speed,
            "ticks_generated": len(all_ticks),
            "ticks_sent": len(sent),
            "ticks_in_flight_at_stop": len(in_flight),
            "ticks_received": len(received),
            "ticks_stored": len(stored),
            "rows_by_table": landed,
            "lost": max(0, len(missing) - dead),
            "missing_from_tick_data": len(missing),
            "duplicated": sum(n - 1 for n in rows.values() if n > 1),
            "duplicated_ranges": _ranges({k for k, n in rows.items() if n > 1}),
            "unexpected_rows": sum(n for k, n in rows.items() if k not in sent),
            "missing_ranges": _ranges(missing),
            "dead_lettered": dead,
            "poison_ticks_sent": poison_sent,
            "candles_checked": sum(checked.values()),
            "candles_checked_by_timeframe": dict(checked),
            "candle_mismatches": sum(mismatches.values()),
            "candle_mismatches_by_kind": dict(mismatches),
            "candle_mismatch_samples": samples,
            "history_requests": len(self.kite.history),
            "history_refetched": refetched,
            "history_calls_on_second_read": second_read_calls,
            "holes_unfetched": holes_unfetched,
            "api_errors": dict(self.api_errors),
            # what the service itself counted, last seen per process (up to a second stale)
            "service_received": sum(int(st.get("received") or 0) for st in self.service_status.values()),
            "service_rejected": dict(
                sum((Counter(st.get("rejected") or {}) for st in self.service_status.values()), Counter())
            ),
            "faults": [f.out() for f in self.faults],
            "faults_unrecovered": sum(1 for f in self.faults if f.recovered_s is None),
            "rss_mb_start": round(rss_start, 1) if rss_start else None,
            "rss_mb_end": round(rss_end, 1) if rss_end else None,
            "rss_mb_max": round(max(self.rss), 1) if self.rss else None,
            "rss_mb_samples": self.rss_samples,
            "serve_starts": self.serve.starts if self.serve else 0,
        }

    def _check_candles(
        self,
        received: set[tuple[int, int]],
        all_ticks: dict[tuple[int, int], SoakTick],
    ) -> tuple[Counter[str], Counter[str], list[dict[str, Any]]]:
        """Every fully captured bucket (each of its trades received, and the trade before it too, so
        its volume is exact; the poison trade counts as not captured) against the oracle."""
        good = {k for k in received if all_ticks[k].price != POISON_PRICE}
        mismatches: Counter[str] = Counter()
        checked: Counter[str] = Counter()
        samples: list[dict[str, Any]] = []
        for day in self.days:
            day_start = datetime(day.year, day.month, day.day, 0, 15, tzinfo=IST)
            for inst in self.market.instruments:
                trades = self.market.trades_between(inst.token, day_start, day_start + timedelta(days=1))
                truth = candles(
                    RawTick(datetime.fromtimestamp(t.epoch, IST), inst.token, t.price, t.quantity, None)
                    for t in trades
                )
                for (tf, _, bucket), (o, h, lo, c, v, _oi, _n) in truth.items():
                    width = WIDTHS[tf]
                    inside = self.market.trades_between(inst.token, bucket, bucket + width)
                    before = self.market.previous_trade(inst.token, bucket)
                    if any((t.token, t.epoch) not in good for t in inside) or (
                        before is not None and (before.token, before.epoch) not in good
                    ):
                        continue
                    checked[tf] += 1
                    got = self.api_candles.get((tf, inst.token, bucket))
                    kind = None
                    if got is None:
                        kind = "missing"
                    elif (
                        max(
                            abs(got["open"] - o),
                            abs(got["high"] - h),
                            abs(got["low"] - lo),
                            abs(got["close"] - c),
                        )
                        > 1e-6
                    ):
                        kind = "price"
                    elif got["volume"] != v:
                        kind = "volume"
                    if kind is not None:
                        mismatches[kind] += 1
                        if mismatches[kind] <= 3:  # a few of each kind
                            samples.append(
                                {
                                    "timeframe": tf,
                                    "token": inst.token,
                                    "bucket": bucket.isoformat(),
                                    "kind": kind,
                                    "expected": [o, h, lo, c, v],
                                    "got": None
                                    if got is None
                                    else [
                                        got["open"],
                                        got["high"],
                                        got["low"],
                                        got["close"],
                                        got["volume"],
                                        got["source"],
                                    ],
                                }
                            )
                # a candle in a fully captured bucket without any trade (quote-only updates) is wrong too
                for (tf, token, bucket), got in self.api_candles.items():
                    if token != inst.token or not day_start <= bucket < day_start + timedelta(days=1):
                        continue
                    if (tf, inst.token, bucket) in truth:
                        continue
                    quotes = [
                        k
                        for k in all_ticks
                        if k[0] == token and bucket.timestamp() <= k[1] < (bucket + WIDTHS[tf]).timestamp()
                    ]
                    if quotes and all(k in good for k in quotes):
                        checked[tf] += 1
                        mismatches["candle_without_trade"] += 1
                        if mismatches["candle_without_trade"] <= 3:
                            samples.append(
                                {
                                    "timeframe": tf,
                                    "token": token,
                                    "bucket": bucket.isoformat(),
                                    "kind": "candle_without_trade",
                                    "got": got,
                                }
                            )
        return mismatches, checked, samples

    def _check_history(
        self,
        received: set[tuple[int, int]],
        all_ticks: dict[tuple[int, int], SoakTick],
    ) -> tuple[int, int]:
        """(session buckets with a trade not received that no history request covers, requests that
        asked again for a range an earlier request of the same token and timeframe covered)."""
        by_key: dict[tuple[int, str], list[tuple[datetime, datetime]]] = {}
        refetched = 0
        for req in self.kite.history:
            earlier = by_key.setdefault((req.token, req.timeframe), [])
            if any(s < req.end and req.start < e for s, e in earlier):
                refetched += 1
            earlier.append((req.start, req.end))
        unfetched: set[tuple[str, int, datetime]] = set()
        final = self.now() - timedelta(minutes=2)
        for key, t in all_ticks.items():
            if not t.trade or key in received:
                continue
            ts = datetime.fromtimestamp(t.epoch, IST)
            if not SESSION[0] <= ts.time() < SESSION[1]:
                continue  # outside the session: nothing to backfill (the pre-open is not a session)
            for tf, width in WIDTHS.items():
                bucket = bucket_of(ts, width)
                if bucket + width > final:
                    continue
                stamp = ts.replace(hour=0, minute=0, second=0) if tf == "1d" else bucket
                if not any(s <= stamp <= e for s, e in by_key.get((t.token, tf), [])):
                    unfetched.add((tf, t.token, bucket))
        return len(unfetched), refetched


def _ranges(keys: set[tuple[int, int]], limit: int = 12) -> list[dict[str, Any]]:
    """Ticks (token, epoch) grouped into runs with no more than a minute between them, for diagnosis."""
    out: list[dict[str, Any]] = []
    for epoch in sorted(e for _, e in keys):
        if out and epoch - out[-1]["_last"] <= 60:
            out[-1]["_last"], out[-1]["ticks"] = epoch, out[-1]["ticks"] + 1
        else:
            out.append({"_first": epoch, "_last": epoch, "ticks": 1})
    return [
        {
            "from": datetime.fromtimestamp(r["_first"], IST).isoformat(timespec="seconds"),
            "to": datetime.fromtimestamp(r["_last"], IST).isoformat(timespec="seconds"),
            "ticks": r["ticks"],
        }
        for r in out[:limit]
    ]


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
