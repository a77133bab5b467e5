"""A local Kite Connect for tests: REST over HTTP/1.1 and the binary ticker over WebSocket.

Both listen on 127.0.0.1 with free ports. Knobs are plain attributes and methods, changed at any
time from the test. The packer here is written from Kite's documented layouts, independently of
``trading_helper.brokers.kite.parsing``, so each checks the other.

    async with FakeKiteServer() as kite:
        settings = kite.settings(tmp_path)
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import hashlib
import io
import json
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from trading_helper.config import Settings

IST = timezone(timedelta(hours=5, minutes=30))
#: the fake's trades happen this many whole seconds before the frame's exchange timestamp
TRADE_LAG_S = 1
HEARTBEAT = b"\x00"

# --- packer ------------------------------------------------------------------------------------


def _scale(token: int) -> int:
    segment = token % 256
    return 10_000_000 if segment == 3 else 10_000 if segment in (6, 12) else 100  # CDS; BCD, NCO; the rest


@dataclass
class Quote:
    """What one packet says about one instrument (prices in rupees, times in epoch seconds)."""

    token: int
    last_price: float
    last_quantity: int = 0
    average_price: float = 0.0
    volume: int = 0
    buy_quantity: int = 0
    sell_quantity: int = 0
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    close: float = 0.0
    last_trade_time: int = 0
    oi: int = 0
    oi_day_high: int = 0
    oi_day_low: int = 0
    exchange_timestamp: int = 0
    bids: list[tuple[int, float, int]] = field(default_factory=list)  # (quantity, price, orders)
    asks: list[tuple[int, float, int]] = field(default_factory=list)


def pack_packet(q: Quote, mode: str) -> bytes:
    """One packet in ``mode`` (ltp/quote/full); index tokens (segment 9) get the index layouts."""
    scale = _scale(q.token)

    def paise(value: float) -> int:
        return round(value * scale)

    is_index = q.token % 256 == 9
    if mode == "ltp":
        size = 8
    elif is_index:
        size = 28 if mode == "quote" else 32
    else:
        size = 44 if mode == "quote" else 184
    buf = bytearray(size)
    struct.pack_into(">I", buf, 0, q.token)
    struct.pack_into(">i", buf, 4, paise(q.last_price))
    if size == 8:
        return bytes(buf)
    if is_index:
        # index order differs: high, low, open, close, change
        for offset, value in (
            (8, q.high),
            (12, q.low),
            (16, q.open),
            (20, q.close),
            (24, q.last_price - q.close),
        ):
            struct.pack_into(">i", buf, offset, paise(value))
        if size == 32:
            struct.pack_into(">I", buf, 28, q.exchange_timestamp)
        return bytes(buf)
    struct.pack_into(">I", buf, 8, q.last_quantity)
    struct.pack_into(">i", buf, 12, paise(q.average_price))
    struct.pack_into(">I", buf, 16, q.volume)
    struct.pack_into(">I", buf, 20, q.buy_quantity)
    struct.pack_into(">I", buf, 24, q.sell_quantity)
    for offset, value in ((28, q.open), (32, q.high), (36, q.low), (40, q.close)):
        struct.pack_into(">i", buf, offset, paise(value))
    if size == 44:
        return bytes(buf)
    for offset, ivalue in (
        (44, q.last_trade_time),
        (48, q.oi),
        (52, q.oi_day_high),
        (56, q.oi_day_low),
        (60, q.exchange_timestamp),
    ):
        struct.pack_into(">I", buf, offset, ivalue)
    levels = (q.bids + [(0, 0.0, 0)] * 5)[:5] + (q.asks + [(0, 0.0, 0)] * 5)[:5]
    for i, (qty, price, orders) in enumerate(levels):
        base = 64 + 12 * i
        struct.pack_into(">I", buf, base, qty)
        struct.pack_into(">i", buf, base + 4, paise(price))
        struct.pack_into(">H", buf, base + 8, orders)  # then 2 bytes of padding, left zero
    return bytes(buf)


def pack_frame(packets: list[bytes]) -> bytes:
    out = bytearray(struct.pack(">H", len(packets)))
    for packet in packets:
        out += struct.pack(">H", len(packet)) + packet
    return bytes(out)


def sample_quote(token: int, seq: int, now: int | None = None) -> Quote:
    """Deterministic values for ``token``'s ``seq``-th tick."""
    ts = int(time.time()) if now is None else now
    base = 100 + token % 997
    price = base + (seq % 40) * 0.05
    return Quote(
        token=token,
        last_price=price,
        last_quantity=1 + seq % 7,
        average_price=base + 0.5,
        volume=1000 + 10 * seq,
        buy_quantity=500,
        sell_quantity=600,
        open=base,
        high=base + 2,
        low=base - 1,
        close=base - 0.5,
        last_trade_time=ts - TRADE_LAG_S,
        oi=20_000 + seq,
        oi_day_high=21_000,
        oi_day_low=19_000,
        exchange_timestamp=ts,
        bids=[(10 * (i + 1), price - 0.05 * (i + 1), i + 1) for i in range(5)],
        asks=[(20 * (i + 1), price + 0.05 * (i + 1), i + 2) for i in range(5)],
    )


# --- deterministic history ------------------------------------------------------------------------

INTERVALS = {"minute": 1, "5minute": 5, "15minute": 15, "60minute": 60, "day": 0}
MAX_SPAN_DAYS = {"minute": 60, "5minute": 100, "15minute": 200, "60minute": 400, "day": 2000}


def history_candles(
    token: str, interval: str, start: datetime, end: datetime, oi: bool = True
) -> list[list[Any]]:
    """Candles on weekdays, 09:15-15:30 IST, with buckets in [start, end] (Kite's ``to`` is inclusive)."""
    out: list[list[Any]] = []
    seed = int(token) % 997 if token.isdigit() else 1
    day = start.astimezone(IST).date()
    while day <= end.astimezone(IST).date():
        if day.weekday() < 5:
            if interval == "day":
                stamps = [datetime(day.year, day.month, day.day, tzinfo=IST)]
            else:
                step = timedelta(minutes=INTERVALS[interval])
                t = datetime(day.year, day.month, day.day, 9, 15, tzinfo=IST)
                close = datetime(day.year, day.month, day.day, 15, 30, tzinfo=IST)
                stamps = []
                while t < close:
                    stamps.append(t)
                    t += step
            for ts in stamps:
                if start <= ts <= end:
                    k = int(ts.timestamp()) // 60
                    o = 100 + seed + (k % 50) * 0.05
                    row: list[Any] = [
                        ts.strftime("%Y-%m-%dT%H:%M:%S+0530"),
                        round(o, 2),
                        round(o + 1, 2),
                        round(o - 1, 2),
                        round(o + 0.5, 2),
                        100 + k % 13,
                    ]
                    out.append([*row, 5000 + k % 17] if oi else row)
        day += timedelta(days=1)
    return out


def _parse_kite_time(value: str) -> datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        with contextlib.suppress(ValueError):
            return datetime.strptime(value, fmt).replace(tzinfo=IST)
    raise ValueError(value)


DEFAULT_INSTRUMENTS: list[dict[str, str]] = [
    {
        "instrument_token": "738561",
        "exchange_token": "2885",
        "tradingsymbol": "RELIANCE",
        "name": "RELIANCE INDUSTRIES",
        "last_price": "0",
        "expiry": "",
        "strike": "0",
        "tick_size": "0.05",
        "lot_size": "1",
        "instrument_type": "EQ",
        "segment": "NSE",
        "exchange": "NSE",
    },
    {
        "instrument_token": "256265",
        "exchange_token": "1001",
        "tradingsymbol": "NIFTY 50",
        "name": "NIFTY 50",
        "last_price": "0",
        "expiry": "",
        "strike": "0",
        "tick_size": "0",
        "lot_size": "0",
        "instrument_type": "EQ",
        "segment": "INDICES",
        "exchange": "NSE",
    },
    {
        "instrument_token": "12345602",
        "exchange_token": "48225",
        "tradingsymbol": "NIFTY24JAN21500CE",
        "name": "NIFTY",
        "last_price": "0",
        "expiry": "2024-01-25",
        "strike": "21500",
        "tick_size": "0.05",
        "lot_size": "50",
        "instrument_type": "CE",
        "segment": "NFO-OPT",
        "exchange": "NFO",
    },
    {
        "instrument_token": "412675",
        "exchange_token": "1612",
        "tradingsymbol": "USDINR24JANFUT",
        "name": "USDINR",
        "last_price": "0",
        "expiry": "2024-01-29",
        "strike": "0",
        "tick_size": "0.0025",
        "lot_size": "1",
        "instrument_type": "FUT",
        "segment": "CDS-FUT",
        "exchange": "CDS",
    },
]
CSV_COLUMNS = [
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
]


@dataclass
class TickerConnection:
    number: int
    ws: ServerConnection
    modes: dict[int, str] = field(default_factory=dict)  # subscribed token -> mode
    stalled: bool = False
    seq: int = 0


@dataclass
class HistoryRequest:
    token: str
    interval: str
    start: datetime
    end: datetime
    oi: str | None


class FakeKiteServer:
    def __init__(
        self,
        *,
        api_key: str = "fake_api_key",
        api_secret: str = "fake_api_secret",
        access_token: str = "fake_access_token",
        request_token: str = "fake_request_token",
        heartbeat_interval_s: float | None = 0.1,
        max_tokens_per_connection: int = 3000,
        max_connections: int = 3,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.access_token = access_token  # the one token REST and WS accept (None: accept any)
        self.request_token = request_token
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_tokens_per_connection = max_tokens_per_connection
        self.max_connections = max_connections
        self.instruments = list(DEFAULT_INSTRUMENTS)
        self.instruments_gzip = "content-encoding"  # or "body": a raw .gz body, as a file download
        # REST knobs and records
        self.history_failures: list[int] = []  # statuses for the next historical calls (0: drop the socket)
        self.rest_failures: list[int] = []  # same, for any REST call
        #: the message of those failures; ``{authorization}`` is replaced by the request's header
        #: (a broker or proxy that echoes what it was sent)
        self.failure_message = "Something went wrong"
        #: a token's own 1m history (Kite's rows: time, open, high, low, close, volume, oi), served
        #: instead of the generated one (a test plants differences from the live candles in it)
        self.history_rows: dict[str, list[list[Any]]] = {}
        self.history_calls: Counter[tuple[str, str]] = Counter()
        #: seconds each historical call takes to answer (a broker's real latency: long enough
        #: for two callers of the same history to overlap)
        self.history_delay_s = 0.0
        #: historical calls received and not answered yet (in their delay)
        self.history_waiting = 0
        self.history_requests: list[HistoryRequest] = []
        self.history_times: list[float] = []
        self.session_requests: list[dict[str, str]] = []
        self.rest_headers: list[dict[str, str]] = []
        # ticker records
        self.connections: list[TickerConnection] = []
        self.ws_messages: list[tuple[int, dict[str, Any]]] = []
        self.upgrade_tokens: list[str] = []
        self.rejected_upgrades = 0
        self._conn_seq = 0
        self._http: asyncio.Server | None = None
        self._ws: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._http_writers: set[asyncio.StreamWriter] = set()

    # --- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> FakeKiteServer:
        self._http = await asyncio.start_server(self._http_client, "127.0.0.1", 0)
        self._ws = await serve(
            self._ws_handler,
            "127.0.0.1",
            0,
            process_request=self._check_upgrade,
            compression=None,
            max_size=2**22,
        )
        self._tasks.append(asyncio.create_task(self._heartbeats()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.drop_connections()
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()
        if self._http is not None:
            self._http.close()
            for writer in list(self._http_writers):
                writer.close()
            await self._http.wait_closed()

    @property
    def api_url(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.sockets[0].getsockname()[1]}"

    @property
    def ws_url(self) -> str:
        assert self._ws is not None
        return f"ws://127.0.0.1:{next(iter(self._ws.sockets)).getsockname()[1]}"

    @property
    def login_url(self) -> str:
        return f"{self.api_url}/connect/login"

    def settings(self, token_dir: Path, **overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            BROKER="kite",
            KITE_API_URL=self.api_url,
            KITE_WS_URL=self.ws_url,
            KITE_LOGIN_URL=self.login_url,
            KITE_API_KEY=self.api_key,
            KITE_API_SECRET=self.api_secret,
            KITE_ACCESS_TOKEN="",
            TOKEN_DIR=token_dir,
        )
        values.update(overrides)
        return Settings(**values)

    # --- ticker knobs ----------------------------------------------------------------------------
    def expire_token(self, new_token: str = "fresh_access_token", *, disconnect: bool = True) -> None:
        """The current token stops working (REST 403, upgrade 403); optionally drop live sockets."""
        self.access_token = new_token
        if disconnect:
            self.drop_connections()

    def drop_connections(self) -> None:
        """Abort every ticker socket without a close frame, as a network failure would."""
        for conn in list(self.connections):
            conn.ws.transport.abort()
        self.connections.clear()

    def stall(self) -> None:
        """Open sockets go silent (no ticks, no heartbeats) but stay open; new ones are healthy."""
        for conn in self.connections:
            conn.stalled = True

    @property
    def subscribed_tokens(self) -> set[int]:
        return {t for conn in self.connections for t in conn.modes}

    async def push_ticks(self) -> int:
        """Send one frame per healthy connection with a packet per subscribed token in its mode."""
        sent = 0
        for conn in list(self.connections):
            if conn.stalled or not conn.modes:
                continue
            conn.seq += 1
            packets = [pack_packet(sample_quote(t, conn.seq), mode) for t, mode in conn.modes.items()]
            if await self._send(conn, pack_frame(packets)):
                sent += len(packets)
        return sent

    async def send_raw(self, frame: bytes | str) -> None:
        for conn in list(self.connections):
            if not conn.stalled:
                await self._send(conn, frame)

    async def _send(self, conn: TickerConnection, frame: bytes | str) -> bool:
        try:
            await conn.ws.send(frame)
            return True
        except ConnectionClosed:
            return False

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s or 0.1)
            if self.heartbeat_interval_s:
                await self.send_raw(HEARTBEAT)

    def _check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        query = parse_qs(urlsplit(request.path).query)
        token = query.get("access_token", [""])[0]
        self.upgrade_tokens.append(token)
        ok = query.get("api_key", [""])[0] == self.api_key and (
            self.access_token is None or token == self.access_token
        )
        if ok and len(self.connections) >= self.max_connections:
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many connections\n")
        if not ok:
            self.rejected_upgrades += 1
            return connection.respond(HTTPStatus.FORBIDDEN, "403 Forbidden\n")
        return None

    async def _ws_handler(self, ws: ServerConnection) -> None:
        self._conn_seq += 1
        conn = TickerConnection(self._conn_seq, ws)
        self.connections.append(conn)
        try:
            async for message in ws:
                if isinstance(message, str):
                    await self._on_ticker_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            with contextlib.suppress(ValueError):
                self.connections.remove(conn)

    async def _on_ticker_message(self, conn: TickerConnection, text: str) -> None:
        msg = json.loads(text)
        self.ws_messages.append((conn.number, msg))
        action, value = msg.get("a"), msg.get("v")
        if action == "subscribe":
            for token in value:
                if token not in conn.modes and len(conn.modes) >= self.max_tokens_per_connection:
                    await self._send(
                        conn, json.dumps({"type": "error", "data": "subscription limit reached"})
                    )
                    break
                conn.modes.setdefault(int(token), "quote")  # Kite's default mode is quote
        elif action == "unsubscribe":
            for token in value:
                conn.modes.pop(int(token), None)
        elif action == "mode":
            mode, tokens = value
            for token in tokens:
                if int(token) in conn.modes:
                    conn.modes[int(token)] = mode

    # --- REST --------------------------------------------------------------------------------
    async def _http_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._http_writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if self.history_delay_s and "/instruments/historical/" in target:
                    self.history_waiting += 1
                    try:
                        await asyncio.sleep(self.history_delay_s)
                    finally:
                        self.history_waiting -= 1
                reply = self._route(method, target, headers, body)
                if reply is None:  # drop the socket without an answer
                    writer.transport.abort()
                    return
                status, extra, payload = reply
                head_lines = [
                    f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
                    f"Content-Length: {len(payload)}",
                    *[f"{k}: {v}" for k, v in extra.items()],
                ]
                writer.write(("\r\n".join(head_lines) + "\r\n\r\n").encode() + payload)
                await writer.drain()
        finally:
            self._http_writers.discard(writer)
            writer.close()

    @staticmethod
    def _json(status: int, obj: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()

    def _error(self, status: int, error_type: str, message: str) -> tuple[int, dict[str, str], bytes]:
        return self._json(
            status, {"status": "error", "message": message, "data": None, "error_type": error_type}
        )

    def _route(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.rest_headers.append(headers)
        if self.rest_failures:
            return self._failure(self.rest_failures.pop(0), headers)
        if method == "POST" and parts.path == "/session/token":
            return self._session(body)
        if headers.get("x-kite-version") != "3":
            return self._error(400, "InputException", "missing X-Kite-Version")
        expected = f"token {self.api_key}:{self.access_token}"
        if self.access_token is not None and headers.get("authorization") != expected:
            return self._error(403, "TokenException", "Incorrect `api_key` or `access_token`.")
        if method == "GET" and parts.path == "/instruments":
            return self._instruments()
        if method == "GET" and parts.path.startswith("/instruments/historical/"):
            return self._history(parts.path, query, headers)
        return self._error(404, "GeneralException", "Route not found")

    def _failure(self, status: int, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes] | None:
        if status == 0:
            return None
        message = self.failure_message.replace("{authorization}", headers.get("authorization", ""))
        if status == 429:
            return self._error(429, "NetworkException", "Too many requests")
        return self._error(status, "GeneralException", message)

    def _session(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        self.session_requests.append(form)
        want = hashlib.sha256((self.api_key + self.request_token + self.api_secret).encode()).hexdigest()
        if form.get("api_key") != self.api_key or form.get("request_token") != self.request_token:
            return self._error(403, "TokenException", "Token is invalid or has expired.")
        if form.get("checksum") != want:
            return self._error(400, "InputException", "Invalid `checksum`.")
        return self._json(
            200,
            {
                "status": "success",
                "data": {
                    "user_id": "AB1234",
                    "access_token": self.access_token,
                    "public_token": "pub",
                    "login_time": "2024-01-01 09:00:00",
                },
            },
        )

    def _instruments(self) -> tuple[int, dict[str, str], bytes]:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.instruments)
        payload = gzip.compress(text.getvalue().encode())
        if self.instruments_gzip == "body":
            return 200, {"Content-Type": "application/gzip"}, payload
        return 200, {"Content-Type": "text/csv", "Content-Encoding": "gzip"}, payload

    def _history(
        self, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes] | None:
        _, _, _, token, interval = path.split("/")
        self.history_calls[(token, interval)] += 1
        self.history_times.append(time.monotonic())
        if self.history_failures:
            return self._failure(self.history_failures.pop(0), headers)
        if interval not in INTERVALS:
            return self._error(400, "InputException", "invalid interval")
        try:
            start, end = _parse_kite_time(query["from"]), _parse_kite_time(query["to"])
        except (KeyError, ValueError):
            return self._error(400, "InputException", "invalid from/to")
        self.history_requests.append(HistoryRequest(token, interval, start, end, query.get("oi")))
        if end - start > timedelta(days=MAX_SPAN_DAYS[interval]):
            return self._error(
                400, "InputException", f"interval exceeds max limit: {MAX_SPAN_DAYS[interval]} days"
            )
        if token in self.history_rows and interval == "minute":
            candles = [
                row if query.get("oi") == "1" else row[:6]
                for row in self.history_rows[token]
                if start <= datetime.strptime(row[0], "%Y-%m-%dT%H:%M:%S%z") <= end
            ]
        else:
            candles = history_candles(token, interval, start, end, oi=query.get("oi") == "1")
        return self._json(200, {"status": "success", "data": {"candles": candles}})
