"""The cluster bench's market and Kite stand-in: every instrument trades once a second and sends
one quote update half a second later (2 ticks/s, Kite's rate per instrument), at real time.

Each tick carries its number in the run in the open-interest field (frame ``2 * second + 0`` for
the trade, ``+ 1`` for the quote), so a stored row names the tick it came from whichever table
it landed in. The stand-in (the soak's, taking several API keys) records what it sent on each
connection as ranges of frame numbers per token: the run's truth, compact at 24,000 ticks/s.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from trading_helper.bench.soak.kite_standin import KiteStandIn
from trading_helper.bench.soak.market import SESSION, SoakInstrument
from trading_helper.bench.soak.oracle import IST, WIDTHS

_QUOTE = struct.Struct(">IiIiIIIiiiiIIIII")  # Kite's full-mode quote and OI fields: 64 bytes
_LEVEL = struct.Struct(">IiH2x")
_LEN = struct.Struct(">H")
QTY = 10


@dataclass
class ClusterMarket:
    count: int
    #: epoch second of frame 0
    t0: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.instruments = [
            SoakInstrument((7000 + i) << 8 | 1, f"CL{i:05d}", 100.0 + (i % 900) * 2.5)
            for i in range(self.count)
        ]
        self._depth = {
            inst.token: b"".join(
                _LEVEL.pack(10 + k, round(inst.base_price * 100) - 5 * (k + 1), 1 + k) for k in range(5)
            )
            + b"".join(
                _LEVEL.pack(20 + k, round(inst.base_price * 100) + 5 * (k + 1), 2 + k) for k in range(5)
            )
            for inst in self.instruments
        }

    def packets(self, frame_no: int) -> dict[int, bytes]:
        """token -> its full-mode packet of frame ``frame_no`` (trade on even, quote on odd)."""
        second = self.t0 + frame_no // 2
        n = frame_no // 2 + 1  # trades so far
        out = {}
        for inst in self.instruments:
            paise = round(inst.base_price * 100) + 5 * ((inst.token + n) % 40)
            head = _QUOTE.pack(
                inst.token, paise, QTY, paise, QTY * n, 500, 600, paise, paise, paise, paise,
                second, frame_no, 0, 0, second,
            )  # fmt: skip
            out[inst.token] = head + self._depth[inst.token]
        return out

    def broker_candles(
        self, token: int, timeframe: str, start: datetime, end: datetime
    ) -> dict[datetime, tuple[float, float, float, float, int]]:
        """History for a backfill: flat candles in the sessions of [start, end)."""
        width = WIDTHS.get(timeframe, timedelta(minutes=1))
        out: dict[datetime, tuple[float, float, float, float, int]] = {}
        day = start.astimezone(IST).date()
        while datetime.combine(day, SESSION[0], tzinfo=IST) < end and len(out) < 5000:
            at = datetime.combine(day, SESSION[0], tzinfo=IST)
            close = datetime.combine(day, SESSION[1], tzinfo=IST)
            while at < close and len(out) < 5000:
                if start <= at < end:
                    out[at] = (100.0, 101.0, 99.0, 100.5, 1000)
                at += width
            day += timedelta(days=1)
        return out


class ClusterStandIn(KiteStandIn):
    """The soak's Kite stand-in for several API keys (``keys``: api key -> access token), counting
    upgrades per key and what it sent as frame ranges per (connection, token)."""

    def __init__(self, market: ClusterMarket, keys: dict[str, str]) -> None:
        first = next(iter(keys.items()))
        super().__init__(market, api_key=first[0], access_token=first[1])  # type: ignore[arg-type]
        self.keys = keys
        self.upgrades: Counter[str] = Counter()
        #: connection number -> [[tokens, first frame, last frame], ...]: runs of frames sent on
        #: it with the same tokens (one comparison per frame, not a record per tick)
        self.segments: dict[int, list[list[Any]]] = {}
        self.frames_sent = 0
        self._queues: dict[int, asyncio.Queue[tuple[int, list[int], bytes]]] = {}
        self._writers: set[asyncio.Task[None]] = set()

    def _use_key_of(self, api_key: str | None, token: str | None) -> bool:
        if api_key in self.keys and self.keys[api_key] == token:
            self.api_key, self.access_token = api_key, token
            return True
        return False

    def _check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(request.path).query)
        key, token = query.get("api_key", [""])[0], query.get("access_token", [""])[0]
        if not self._use_key_of(key, token):
            self.refused_upgrades += 1
            return connection.respond(HTTPStatus.FORBIDDEN, "403 Forbidden\n")
        self.upgrades[key] += 1
        return None

    def _route(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        auth = headers.get("authorization", "")
        for key, token in self.keys.items():
            if auth == f"token {key}:{token}":
                self._use_key_of(key, token)
        return super()._route(method, target, headers)

    async def send_frame(self, frame_no: int, packets: dict[int, bytes]) -> int:
        """Frame ``frame_no`` queued for every connection, with the packets of the tokens it
        carries in full. Each connection is written by a task of its own, as a broker's are: a
        client slow to read falls behind alone, and never holds the others' frames back."""
        queued = 0
        for conn in list(self.connections):
            mine = [t for t, mode in conn.modes.items() if mode == "full" and t in packets]
            if not mine:
                continue
            body = _LEN.pack(len(mine)) + b"".join(_LEN.pack(len(packets[t])) + packets[t] for t in mine)
            if conn.number not in self._queues:
                self._queues[conn.number] = asyncio.Queue()
                self._writers.add(asyncio.create_task(self._write(conn)))
            self._queues[conn.number].put_nowait((frame_no, mine, body))
            queued += len(mine)
        self.frames_sent += 1
        return queued

    async def _write(self, conn: Any) -> None:
        """One connection's frames, in order; a frame counts as sent once written to its socket."""
        queue = self._queues[conn.number]
        runs = self.segments.setdefault(conn.number, [])
        while True:
            frame_no, mine, body = await queue.get()
            try:
                await conn.ws.send(body)
            except ConnectionClosed:
                return
            if runs and runs[-1][2] == frame_no - 1 and runs[-1][0] == mine:
                runs[-1][2] = frame_no
            else:
                runs.append([mine, frame_no, frame_no])

    def unsent_frames(self) -> int:
        """Frames queued for connections that closed before they were written."""
        return sum(q.qsize() for q in self._queues.values())

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Until every queued frame is written (or its connection closed)."""
        deadline = time.monotonic() + timeout_s
        while any(q.qsize() for n, q in self._queues.items() if n in self.open_connections()):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        for task in self._writers:
            task.cancel()
        await asyncio.gather(*self._writers, return_exceptions=True)
        await super().__aexit__(*exc)

    @property
    def ranges(self) -> dict[int, dict[int, list[list[int]]]]:
        """connection number -> token -> [[first frame, last frame], ...] sent on it."""
        out: dict[int, dict[int, list[list[int]]]] = {}
        for number, runs in self.segments.items():
            by_token = out.setdefault(number, {})
            for tokens, lo, hi in runs:
                for t in tokens:
                    spans = by_token.setdefault(t, [])
                    if spans and spans[-1][1] == lo - 1:
                        spans[-1][1] = hi
                    else:
                        spans.append([lo, hi])
        return out

    def open_connections(self) -> set[int]:
        return {c.number for c in self.connections}
