"""``trading-helper bench cluster``: the cluster on this machine, with kills on a schedule.

Real processes: a Redis of its own (AOF), a fresh database on the configured PostgreSQL, the Kite
stand-in taking one API key per account (:mod:`.market`), ``serve --no-ingest`` API replicas,
``collect`` processes (2 per account by default) and ``write`` processes. The instruments are
synced and subscribed through an API replica; once every one is carried in full mode, the
stand-in sends 2 ticks/s per instrument at real time. On the schedule: a SIGKILL of a collector
holding shards (at 25 % of the run), of a writer holding streams (45 %), the same uncovered
history asked of two replicas at once (60 %), a SIGKILL of an API replica (70 %). With
``restart_after_s`` (``--restart-after``), each killed process is started again that long after, as
compose's restart policy would, and takes its share of the work back (writers and collectors hold
fair shares: a second handover); by default it stays dead for the rest of the run. Then the
sending stops, the streams drain, the database is read back (:mod:`.accounting`), and the
coverage holes' 1m candles through a replica, to see them backfilled (:mod:`.holes`).

``takeover_s``: from a kill to the shard's new collector reporting its feed connected (for a
writer: to every stream of the dead writer leased by another), the worst seen.
``latency_ms_p99``: receive (the collector's stamp) to commit, from the writers' histograms.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from trading_helper.bench.cluster.accounting import account, by_step, drain
from trading_helper.bench.cluster.holes import check_backfill, hole_minutes
from trading_helper.bench.cluster.lagwatch import LagWatch
from trading_helper.bench.cluster.market import ClusterMarket, ClusterStandIn
from trading_helper.bench.cluster.processes import Child, CpuMeter, pid_of, wait_takeover
from trading_helper.bench.scratch import scratch_database
from trading_helper.bench.soak.oracle import IST
from trading_helper.bench.soak.processes import RedisServer, free_port
from trading_helper.bench.soak.run import last_trading_days
from trading_helper.cluster.coordinator import read_plan
from trading_helper.cluster.leasekeys import lease_owners
from trading_helper.config import Settings
from trading_helper.ingest import keys
from trading_helper.ingest.lags import LagHistograms, percentile

_IDS = "SELECT broker_token, instrument_id FROM instrument_broker_ids WHERE broker = 'kite'"
TARGET_P99_MS = 250.0


class ClusterBench:
    def __init__(
        self,
        settings: Settings,
        *,
        accounts: int,
        instruments: int,
        seconds: float,
        collectors: int | None = None,
        writers: int = 2,
        api_replicas: int = 2,
        restart_after_s: float | None = None,
        progress: Callable[[str, float], None] | None = None,
        logs: Path | None = None,
    ) -> None:
        self.settings = settings
        self.logs = logs
        self.names = [chr(ord("a") + i) for i in range(accounts)]
        self.instruments = instruments
        self.seconds = seconds
        self.n_collectors = collectors if collectors is not None else 2 * accounts
        self.n_writers = writers
        self.n_apis = api_replicas
        #: a killed process is started again this long after (as compose's restart policy or an
        #: orchestrator would); None: it stays dead for the rest of the run
        self.restart_after_s = restart_after_s
        self.restarts: list[asyncio.Task[None]] = []
        self.progress = progress
        self.children: list[Child] = []
        self.takeovers: list[float] = []
        self.events: list[dict[str, Any]] = []
        self.history: dict[str, Any] = {}
        #: (step of the schedule, receive-to-commit histograms at its start; the first: before kills)
        self.lags_at: list[tuple[str, LagHistograms]] = []
        self.cpu = CpuMeter()

    def _note(self, text: str, fraction: float) -> None:
        if self.progress is not None:
            self.progress(text, fraction)

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="th-cluster-") as tmp:
            self.workdir = Path(tmp)
            async with scratch_database(self.settings.DATABASE_URL, prefix="th_cluster") as dsn:
                redis_server = self.redis_server = RedisServer(self.workdir)
                await redis_server.start()
                self.redis = aioredis.Redis.from_url(redis_server.url)
                self.lagwatch = LagWatch(self.redis)
                self.db = await asyncpg.connect(dsn)
                api_keys = {f"cluster_key_{n}": f"cluster_token_{n}_0123456789" for n in self.names}
                self.market = ClusterMarket(self.instruments)
                self.kite = ClusterStandIn(self.market, api_keys)
                try:
                    async with self.kite:
                        self.env = self._env(dsn, redis_server.url, api_keys)
                        result = await self._run()
                finally:
                    await asyncio.gather(*(c.stop() for c in self.children))
                    if self.logs is not None:
                        self.logs.mkdir(parents=True, exist_ok=True)
                        for log in self.workdir.glob("*.log"):
                            shutil.copy(log, self.logs / log.name)
                    await self.db.close()
                    await self.redis.aclose()
                    await redis_server.kill()
        result["seconds"] = round(time.monotonic() - started, 1)
        return result

    def _env(self, dsn: str, redis_url: str, api_keys: dict[str, str]) -> dict[str, str]:
        self.api_token = secrets.token_urlsafe(16)
        env = {
            "DATABASE_URL": dsn,
            "REDIS_URL": redis_url,
            "BROKER": "kite",
            "KITE_ACCOUNTS": ",".join(self.names),
            "KITE_API_KEY": "",
            "KITE_ACCESS_TOKEN": "",
            "KITE_API_URL": self.kite.api_url,
            "KITE_WS_URL": self.kite.ws_url,
            "TOKEN_DIR": str(self.workdir / "tokens"),
            "API_TOKEN": self.api_token,
            "LOG_LEVEL": "WARNING",
            "REFRESH_INTERVAL_S": "2",
            "RECONCILE_AFTER_MINUTES": "0",
            "LEASE_TTL_S": "5",
        }
        for name, (key, token) in zip(self.names, api_keys.items(), strict=True):
            env[f"KITE_{name.upper()}_API_KEY"] = key
            env[f"KITE_{name.upper()}_ACCESS_TOKEN"] = token
        return env

    async def _spawn(self, name: str, *args: str) -> Child:
        child = Child(name, list(args), self.env, self.workdir)
        await child.start()
        self.children.append(child)
        return child

    async def _start_apis(self) -> list[httpx.AsyncClient]:
        clients = []
        for n in range(self.n_apis):
            port = free_port()
            await self._spawn(f"api-{n + 1}", "serve", "--no-ingest", "--port", str(port))
            client = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                timeout=180,
                headers={"Authorization": f"Bearer {self.api_token}"},
            )
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await client.get("/api/health")).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"API replica {n + 1} did not answer (see its log)")
                await asyncio.sleep(0.2)
            clients.append(client)
        return clients

    async def _run(self) -> dict[str, Any]:
        self._note("starting the API replicas", 0.0)
        self.apis = await self._start_apis()
        (await self.apis[0].post("/api/instruments/sync")).raise_for_status()
        tokens = [str(i.token) for i in self.market.instruments]
        for at in range(0, len(tokens), 5000):
            body = {"instruments": tokens[at : at + 5000]}
            (
                await self.apis[at // 5000 % len(self.apis)].post("/api/instruments/subscribe", json=body)
            ).raise_for_status()
        self.ids = {int(r["broker_token"]): r["instrument_id"] for r in await self.db.fetch(_IDS)}
        for n in range(self.n_writers):
            await self._spawn(f"writer-{n + 1}", "write")
        for n in range(self.n_collectors):
            await self._spawn(f"collector-{n + 1}", "collect")
        self._note("waiting for every instrument on a live connection", 0.02)
        deadline = time.monotonic() + 240
        while len(self.kite.live_tokens()) < self.instruments:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.kite.live_tokens())} instruments subscribed after 240 s")
            await asyncio.sleep(0.5)
        plan = await read_plan(self.redis)
        assert plan is not None
        self.shards = [s.key for s in plan.shards if plan.instruments_of(s)]
        self.streams = [keys.shard_stream(self.settings.TICK_STREAM, s) for s in self.shards]
        self.market.t0 = int(time.time()) + 1
        await asyncio.sleep(max(0.0, self.market.t0 - time.time()))
        self.cpu.start(self._pids())
        self.sending = True
        sender = asyncio.create_task(self._send())
        self.lagwatch.start()
        begun = time.monotonic()
        try:
            for fraction, what in ((0.25, self._kill_collector), (0.45, self._kill_writer),
                                   (0.6, self._history), (0.7, self._kill_api)):  # fmt: skip
                await asyncio.sleep(max(0.0, begun + fraction * self.seconds - time.monotonic()))
                step = what.__name__.strip("_").replace("_", " ")
                self._note(step, 0.05 + 0.8 * fraction)
                self.lags_at.append((step, await self.lagwatch.read()))
                await what()
            await asyncio.sleep(max(0.0, begun + self.seconds - time.monotonic()))
        finally:
            self.sending = False
            self.lagwatch.cancel()
            await sender
            await asyncio.gather(*self.restarts)
            await self.kite.settle()
            await self.lagwatch.stop()
        send_s = time.monotonic() - begun
        self._note("draining the streams", 0.9)
        drained = await drain(self.redis, self.streams)
        lags = await self.lagwatch.read()
        self._note("reading back", 0.95)
        accounts = await account(self.db, self.kite.ranges, self.ids, self.kite.open_connections())
        queued_unsent = self.kite.unsent_frames()
        self._note("reading the holes' candles through a replica", 0.97)
        holes = hole_minutes(
            accounts.unique, sorted(self.ids.values()), self.kite.frames_sent, self.market.t0
        )
        backfill = await check_backfill(self.db, self.apis[0], holes)
        p99 = percentile(lags.total, 0.99)
        before_kills = self.lags_at[0][1] if self.lags_at else LagHistograms()
        return {
            "accounts": len(self.names),
            "shards": len(self.shards),
            "collectors": self.n_collectors,
            "writers": self.n_writers,
            "api_replicas": self.n_apis,
            "instruments": self.instruments,
            "ticks_sent": accounts.sent,
            "ticks_per_s": round(accounts.sent / send_s, 1),
            "ticks_stored": accounts.stored,
            "ticks_received": accounts.received,
            "ticks_in_flight_at_kill": accounts.in_flight,
            "frames_queued_unsent": queued_unsent,
            # ticks of frames sent while no connection carried their instrument (between a
            # collector's death and its successor's subscription), and those in flight: the holes
            "coverage_hole_ticks": self.instruments * self.kite.frames_sent - accounts.received,
            **backfill,
            "lost": accounts.lost,
            "duplicated": accounts.duplicated,
            "dead_lettered": accounts.dead_lettered,
            "duplicated_samples": accounts.duplicated_samples,
            "lost_samples": accounts.lost_samples,
            "takeover_s": round(max(self.takeovers), 2) if self.takeovers else None,
            "takeovers": [round(t, 2) for t in self.takeovers],
            "history_calls": self.history.get("calls"),
            "history_calls_duplicated": self.history.get("duplicated"),
            "history_status": self.history.get("status"),
            "latency_ms_p50": percentile(lags.total, 0.5),
            "latency_ms_p99": p99,
            "latency_target_ms": TARGET_P99_MS,
            "latency_target_met": p99 is not None and p99 < TARGET_P99_MS,
            "latency_ticks": sum(lags.total.values()),
            # the steady state: ticks committed before the first kill (the rest waited out takeovers)
            "latency_ms_p99_before_kills": percentile(before_kills.total, 0.99),
            # where the time goes (p50/p99 of each stage, see ingest/lags.py), before the kills and in all
            "latency_stages_ms_before_kills": before_kills.summary(),
            "latency_ms_p99_by_step": by_step([(n, h.total) for n, h in self.lags_at], lags.total),
            "latency_stages_ms": lags.summary(),
            # p99 per 10 s of sending (bench/cluster/lagwatch.py): when the slow commits came
            "latency_ms_p99_by_10s": self.lagwatch.windows(),
            # cores busy per role in the steady state (bench/cluster/processes.CpuMeter)
            "cpu_cores_before_kills": self.cpu.cores(),
            "cpu_us_per_tick_before_kills": self.cpu.us_per_tick(accounts.sent / send_s),
            "upgrades_per_key": dict(self.kite.upgrades),
            "drained": drained,
            "events": self.events,
            # per ticker connection: [number, first frame, last frame, instruments at first, open at end]
            "connections": [
                [n, runs[0][1], runs[-1][2], len(runs[0][0]), n in self.kite.open_connections()]
                for n, runs in sorted(self.kite.segments.items())
                if runs  # a connection closed before its first frame was written carried none
            ],
            "send_seconds": round(send_s, 1),
        }

    async def _send(self) -> None:
        frame = 0
        while self.sending:
            due = self.market.t0 + frame * 0.5 + 0.05
            await asyncio.sleep(max(0.0, due - time.time()))
            await self.kite.send_frame(frame, self.market.packets(frame))
            frame += 1

    async def _kill_one(self, role: str, names: list[str], prefix: str) -> None:
        owners = await lease_owners(self.redis, role, names)
        by_pid = Counter(pid_of(o) for o in owners.values() if o)
        victim = next((c for c in self.children if c.name.startswith(prefix) and by_pid[c.pid]), None)
        if victim is None:
            self.events.append({"kill": prefix, "error": "no process of this role held anything"})
            return
        held = [n for n, o in owners.items() if pid_of(o) == victim.pid]
        killed_at = time.time()
        self._kill(victim)
        took = await wait_takeover(self.redis, role, held, victim.pid, killed_at)
        if took is not None:
            self.takeovers.append(took)
        self.events.append(
            {"kill": victim.name, "held": held, "takeover_s": None if took is None else round(took, 2)}
        )

    def _kill(self, victim: Child) -> None:
        """SIGKILL, and a start again ``restart_after_s`` later."""
        victim.kill()
        if self.restart_after_s is not None:
            self.restarts.append(asyncio.create_task(self._restart(victim, self.restart_after_s)))

    async def _restart(self, child: Child, after_s: float) -> None:
        assert child.proc is not None
        await asyncio.gather(child.proc.wait(), asyncio.sleep(after_s))
        await child.start()
        self.events.append({"restart": child.name, "pid": child.pid})

    def _pids(self) -> dict[str, int]:
        pids = {c.name: c.pid for c in self.children if c.proc is not None}
        if self.redis_server.pid is not None:
            pids["redis"] = self.redis_server.pid
        return pids

    async def _kill_collector(self) -> None:
        self.cpu.sample(self._pids())
        await self._kill_one("collector", self.shards, "collector-")

    async def _kill_writer(self) -> None:
        await self._kill_one("writer", self.streams, "writer-")

    async def _kill_api(self) -> None:
        victim = next(c for c in self.children if c.name == f"api-{self.n_apis}")
        self._kill(victim)
        others = self.apis[: self.n_apis - 1]
        answers = [(await api.get("/api/status")).status_code for api in others]
        self.events.append({"kill": victim.name, "others_status": answers})

    async def _history(self) -> None:
        """The same uncovered 5m history (the last trading day before yesterday) from every replica at once."""
        day = last_trading_days(1, datetime.now(IST) - timedelta(days=1))[0]
        start = datetime(day.year, day.month, day.day, 9, 15, tzinfo=IST)
        token = self.market.instruments[0].token
        params = {"instrument": str(token), "interval": "5m", "from": start.isoformat(),
                  "to": (start + timedelta(hours=6, minutes=15)).isoformat()}  # fmt: skip
        before = len(self.kite.history)
        replies = await asyncio.gather(*(api.get("/api/candles", params=params) for api in self.apis))
        calls = [h for h in self.kite.history[before:] if h.token == token]
        status = (await self.apis[0].get("/api/status")).json().get("cluster") or {}
        self.events.append({"api_status_cluster": {k: status.get(k) for k in ("accounts", "instruments", "unassigned")}
                            | {"shards": len(status.get("shards") or {})}})  # fmt: skip
        self.history = {
            "calls": len(calls),
            "duplicated": len(calls) - len({(h.timeframe, h.start, h.end) for h in calls}),
            "status": [r.status_code for r in replies],
        }


async def run_cluster(settings: Settings, **kwargs: Any) -> dict[str, Any]:
    bench = ClusterBench(settings, **kwargs)
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main is not None:
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        return await bench.run()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
