"""A Kite Connect stand-in for the soak: the binary ticker over WebSocket and the REST API over HTTP.

Written from Kite's published layouts (https://kite.trade/docs/connect/v3/websocket/): a frame is
a 2-byte packet count, then per packet a 2-byte length and the packet; a full-mode packet of a
tradable instrument is 184 bytes (64 bytes of quote and OI fields, then 5 bid and 5 ask levels of
12 bytes); prices are paise as int32; a 1-byte frame is a heartbeat. It lives in the package (the
bench cannot import ``tests``), so it is written again here rather than shared with the test fake.

The stand-in is the exchange's truth: it knows every tick it generated, which ones it sent on a
connection carrying the instrument in full mode, and every historical request it answered. Its
history is computed from the same generated ticks (every trade, delivered or not).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import io
import json
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from trading_helper.bench.soak.market import Market, SoakTick
from trading_helper.bench.soak.oracle import IST
from trading_helper.brokers.kite.constants import INSTRUMENT_COLUMNS

_QUOTE = struct.Struct(">IiIiIIIiiiiIIIII")  # token .. exchange_timestamp: 64 bytes
_LEVEL = struct.Struct(">IiH2x")  # quantity, price, orders, padding: 12 bytes
_HISTORY_INTERVALS = {"minute": "1m", "5minute": "5m", "15minute": "15m", "60minute": "1h", "day": "1d"}


def full_packet(t: SoakTick) -> bytes:
    """One full-mode packet (NSE equity: prices in paise)."""
    paise = round(t.price * 100)
    head = _QUOTE.pack(
        t.token,
        paise,
        t.quantity,
        paise,
        t.volume,
        500,
        600,
        paise,
        paise,
        paise,
        paise,
        t.trade_epoch,
        0,
        0,
        0,
        t.epoch,
    )
    bids = b"".join(_LEVEL.pack(10 + i, t.bid_paise - 5 * i, 1 + i) for i in range(5))
    asks = b"".join(_LEVEL.pack(20 + i, t.bid_paise + 5 * (i + 1), 2 + i) for i in range(5))
    return head + bids + asks


def frame(packets: list[bytes]) -> bytes:
    return struct.pack(">H", len(packets)) + b"".join(struct.pack(">H", len(p)) + p for p in packets)


@dataclass(eq=False)
class Connection:
    number: int
    ws: ServerConnection
    access_token: str
    opened_real: float
    modes: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    token: int
    timeframe: str
    start: datetime
    end: datetime  # Kite's ``to`` is inclusive


class KiteStandIn:
    def __init__(self, market: Market, *, api_key: str, access_token: str) -> None:
        self.market = market
        self.api_key = api_key
        self.access_token = access_token
        self.connections: list[Connection] = []
        self.history: list[HistoryRequest] = []
        #: (token, epoch) -> (real time it was sent, connection number)
        self.sent: dict[tuple[int, int], tuple[float, int]] = {}
        self._numbers = 0
        self.refused_upgrades = 0
        self.rest_status: Counter[int] = Counter()
        self._http: asyncio.Server | None = None
        self._ws: Server | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KiteStandIn:
        self._http = await asyncio.start_server(self._http_client, "127.0.0.1", 0)
        self._ws = await serve(
            self._ws_handler,
            "127.0.0.1",
            0,
            process_request=self._check_upgrade,
            compression=None,
            max_size=2**22,
        )
        self._heartbeat = asyncio.create_task(self._heartbeats())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        self.drop_connections()
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()
        if self._http is not None:
            self._http.close()
            await self._http.wait_closed()

    @property
    def api_url(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.sockets[0].getsockname()[1]}"

    @property
    def ws_url(self) -> str:
        assert self._ws is not None
        return f"ws://127.0.0.1:{next(iter(self._ws.sockets)).getsockname()[1]}"

    # --- faults ----------------------------------------------------------------------------------
    def drop_connections(self) -> None:
        """Close every ticker socket at the TCP level (no close frame): what was sent still arrives."""
        for conn in self.connections:
            conn.ws.transport.close()
        self.connections.clear()

    def expire_token(self, new_token: str) -> None:
        """The day's token stops working (403 on REST and on the upgrade); open sockets are dropped."""
        self.access_token = new_token
        self.drop_connections()

    def live_tokens(self) -> set[int]:
        """Tokens carried in full mode on an open connection."""
        return {t for c in self.connections for t, m in c.modes.items() if m == "full"}

    # --- ticker ----------------------------------------------------------------------------------
    async def send(self, ticks: list[SoakTick]) -> int:
        """One frame per connection with the packets of the tokens it carries in full mode."""
        sent = 0
        now = time.time()
        for conn in list(self.connections):
            mine = [t for t in ticks if conn.modes.get(t.token) == "full"]
            if not mine:
                continue
            try:
                await conn.ws.send(frame([full_packet(t) for t in mine]))
            except ConnectionClosed:
                continue
            for t in mine:
                self.sent.setdefault((t.token, t.epoch), (now, conn.number))
            sent += len(mine)
        return sent

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for conn in list(self.connections):
                with contextlib.suppress(ConnectionClosed):
                    await conn.ws.send(b"\x00")

    def _check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        query = parse_qs(urlsplit(request.path).query)
        if (
            query.get("api_key", [""])[0] != self.api_key
            or query.get("access_token", [""])[0] != self.access_token
        ):
            self.refused_upgrades += 1
            return connection.respond(HTTPStatus.FORBIDDEN, "403 Forbidden\n")
        return None

    async def _ws_handler(self, ws: ServerConnection) -> None:
        token = parse_qs(urlsplit(ws.request.path if ws.request else "").query).get("access_token", [""])[0]
        self._numbers += 1
        conn = Connection(self._numbers, ws, token, time.time())
        self.connections.append(conn)
        try:
            async for message in ws:
                if not isinstance(message, str):
                    continue
                msg = json.loads(message)
                action, value = msg.get("a"), msg.get("v")
                if action == "subscribe":
                    for t in value:
                        conn.modes.setdefault(int(t), "quote")  # Kite's default mode
                elif action == "unsubscribe":
                    for t in value:
                        conn.modes.pop(int(t), None)
                elif action == "mode":
                    mode, tokens = value
                    for t in tokens:
                        if int(t) in conn.modes:
                            conn.modes[int(t)] = mode
        except ConnectionClosed:
            pass
        finally:
            with contextlib.suppress(ValueError):
                self.connections.remove(conn)

    # --- REST ------------------------------------------------------------------------------------
    async def _http_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
                }
                await reader.readexactly(int(headers.get("content-length", "0")))
                status, extra, payload = self._route(method, target, headers)
                self.rest_status[status] += 1
                head_lines = [
                    f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
                    f"Content-Length: {len(payload)}",
                    *[f"{k}: {v}" for k, v in extra.items()],
                ]
                writer.write(("\r\n".join(head_lines) + "\r\n\r\n").encode() + payload)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()

    @staticmethod
    def _json(status: int, obj: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()

    def _route(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(target)
        if headers.get("authorization") != f"token {self.api_key}:{self.access_token}":
            return self._json(
                403,
                {
                    "status": "error",
                    "error_type": "TokenException",
                    "data": None,
                    "message": "Incorrect `api_key` or `access_token`.",
                },
            )
        if method == "GET" and parts.path == "/instruments":
            return self._instruments()
        if method == "GET" and parts.path.startswith("/instruments/historical/"):
            return self._historical(parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()})
        return self._json(
            404,
            {"status": "error", "error_type": "GeneralException", "data": None, "message": "Route not found"},
        )

    def _instruments(self) -> tuple[int, dict[str, str], bytes]:
        text = io.StringIO()
        out = csv.writer(text, lineterminator="\n")
        out.writerow(INSTRUMENT_COLUMNS)
        for inst in self.market.instruments:
            out.writerow(
                [inst.token, inst.token >> 8, inst.symbol, inst.symbol, 0, "", 0, 0.05, 1, "EQ", "NSE", "NSE"]
            )
        return (
            200,
            {"Content-Type": "text/csv", "Content-Encoding": "gzip"},
            gzip.compress(text.getvalue().encode()),
        )

    def _historical(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        _, _, _, token_text, interval = path.split("/")
        timeframe = _HISTORY_INTERVALS.get(interval)
        try:
            start = datetime.strptime(query["from"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)
            end = datetime.strptime(query["to"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)
            token = int(token_text)
        except (KeyError, ValueError):
            timeframe = None
        if timeframe is None:
            return self._json(
                400,
                {
                    "status": "error",
                    "error_type": "InputException",
                    "data": None,
                    "message": "invalid interval or from/to",
                },
            )
        self.history.append(HistoryRequest(token, timeframe, start, end))
        rows = []
        for bucket, (o, h, lo, c, v) in sorted(
            self.market.broker_candles(token, timeframe, start, end + timedelta(seconds=1)).items()
        ):
            rows.append([bucket.astimezone(IST).strftime("%Y-%m-%dT%H:%M:%S+0530"), o, h, lo, c, v, 0])
        return self._json(200, {"status": "success", "data": {"candles": rows}})
