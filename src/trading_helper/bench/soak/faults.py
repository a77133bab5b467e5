"""The soak's fault schedule and how each fault is injected and judged recovered.

Each ``_fault_<kind>`` method injects one fault at its scheduled time (the clock runs at real speed
meanwhile, see :meth:`~trading_helper.bench.soak.run.Soak._run_day`) and sets the fault's
``recovered_s``: real seconds from the cause's end to the sign that the path works again (the live
feed carries every instrument, or a tick stamped after the cause ended is stored), None past
:data:`RECOVERY_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from trading_helper.bench.faultproxy import FaultProxy
from trading_helper.bench.soak.kite_standin import KiteStandIn
from trading_helper.bench.soak.market import POISON_PRICE, Market
from trading_helper.bench.soak.oracle import IST
from trading_helper.bench.soak.processes import RedisServer, ServeProcess
from trading_helper.brokers.tokens import save_token
from trading_helper.config import Settings
from trading_helper.ingest.codec import decode_ticks
from trading_helper.ingest.stream import TICKS_FIELD

#: ticks sent this long (real seconds) before a SIGKILL or SIGTERM may still sit in a socket buffer
#: or in the process: never acknowledged, so neither received nor lost (nor is anything sent on the killed
#: process's sockets after the kill, or on a stopping process's sockets after its SIGTERM)
IN_FLIGHT_S = 0.5
#: the target: every fault recovered within 30 s of its cause ending
RECOVERY_TIMEOUT_S = 30.0
PG_DOWN_S = 30.0

STORED_SINCE = "SELECT EXISTS (SELECT 1 FROM tick_data WHERE time >= $1)"
TICK_STREAM = "th:soak:ticks"

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


@dataclass
class Fault:
    kind: str
    at: str
    recovered_s: float | None = None
    #: real seconds at real speed before the fault, until serve had stored the last trade sent
    settled_s: float | None = None
    note: str = ""

    def out(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "at": self.at,
            "recovered_s": self.recovered_s,
            "settled_s": self.settled_s,
        }
        if self.note:
            d["note"] = self.note
        return d


class FaultInjection:
    """The fault methods of :class:`~trading_helper.bench.soak.run.Soak` (its state, declared here)."""

    market: Market
    kite: KiteStandIn
    proxy: FaultProxy
    redis: RedisServer
    serve: ServeProcess | None
    db: asyncpg.Connection
    http: httpx.AsyncClient
    workdir: Path
    access_token: str
    #: (real time, lead in seconds, connection numbers open then) of each SIGKILL or SIGTERM of serve:
    #: what its connections carried after time - lead was never acknowledged
    stops: list[tuple[float, float, frozenset[int]]]
    #: real seconds by which each stopped serve was behind the stand-in (None: not known)
    stop_lags: list[float | None]
    #: broker token -> instrument id
    ids: dict[int, int]

    def now(self) -> datetime:
        raise NotImplementedError

    async def _start_serve(self) -> None:
        raise NotImplementedError

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

    async def _settle(self, fault: Fault, day: date) -> None:
        """Before a fault, at real speed: wait until serve has stored the last trade sent so far.

        At 600x a frame that waits 20 ms in a socket or in the stand-in's send loop is 12 simulated
        seconds late, beyond the 3 s a tick can be late (which the live coverage allows for), and a
        starved ``serve`` on a loaded machine fell 1.5 real seconds (15 simulated minutes) behind:
        a SIGKILL then threw away ticks "received" long before, and a drop left due ticks unsent.
        Neither is what a fault does to a service that keeps up at real speed. So the backlog of
        the fast replay is worked off first; the fault then meets ticks in flight at real speed."""
        await asyncio.sleep(0.1)  # the send loop (every 20 ms) sends what the fast clock made due
        sent = self.kite.sent
        trades = [
            t
            for t in self.market.ticks[day]
            if t.trade and t.price != POISON_PRICE and (t.token, t.epoch) in sent
        ]
        if not trades:
            fault.settled_s = 0.0
            return
        last = datetime.fromtimestamp(max(t.epoch for t in trades), IST)
        fault.settled_s = await self._recovered(lambda: self._stored_since(last), time.monotonic())
        if fault.settled_s is None:
            fault.note = (
                f"serve had not stored the trades sent before the fault within {RECOVERY_TIMEOUT_S:g} s"
            )

    async def _record_stop(self, stop: float, numbers: frozenset[int]) -> None:
        """What serve had taken in when it stopped: every tick the stand-in sent up to the newest one
        in serve's Redis stream (read once serve is gone). Later ticks on its connections were still
        in a socket or in the process, never acknowledged: in flight, not received. Without one
        (the writer trimmed everything), the last :data:`IN_FLIGHT_S` before the stop are."""
        accepted = await self._accepted_until()
        self.stops.append((accepted if accepted is not None else stop - IN_FLIGHT_S, 0.0, numbers))
        self.stop_lags.append(None if accepted is None else round(stop - accepted, 3))

    async def _accepted_until(self) -> float | None:
        """Real time at which the stand-in sent the newest tick of serve's Redis stream."""
        client = aioredis.Redis.from_url(self.redis.url)
        try:
            entries = await client.xrevrange(TICK_STREAM, count=50)
        finally:
            await client.aclose()
        token_of = {iid: tok for tok, iid in self.ids.items()}
        for _id, fields in entries or []:
            payload = (fields or {}).get(TICKS_FIELD)
            if not isinstance(payload, bytes):
                continue  # a capture start, no ticks
            sent = [
                self.kite.sent.get((token_of.get(t.instrument_id, -1), int(t.exchange_ts.timestamp())))
                for t in decode_ticks(payload)
            ]
            times = [at for at, _ in filter(None, sent)]
            if times:
                return max(times)
        return None

    def _all_live(self) -> bool:
        return self.kite.live_tokens() >= {i.token for i in self.market.instruments}

    async def _stored_since(self, sim: datetime) -> bool:
        try:
            return bool(await self.db.fetchval(STORED_SINCE, sim))
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
        stop, numbers = time.time(), frozenset(c.number for c in self.kite.connections)
        await self.serve.kill()
        await self._record_stop(stop, numbers)
        await self.http.aclose()
        await self._start_serve()
        back = self.now() + timedelta(seconds=4)
        fault.recovered_s = await self._recovered(lambda: self._stored_since(back), time.monotonic())

    async def _fault_api_restart(self, fault: Fault, day: date) -> None:
        assert self.serve is not None
        # a graceful stop does not read what is still in its sockets either: in flight as at a kill
        stop, numbers = time.time(), frozenset(c.number for c in self.kite.connections)
        clean = await self.serve.stop()
        await self._record_stop(stop, numbers)
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
