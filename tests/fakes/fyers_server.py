"""A local Fyers API v3 for tests: REST (uvicorn + starlette) and the HSM data socket (websockets).

Both listen on 127.0.0.1 with free ports. Knobs are attributes and methods, changed at any time
from the test. The frame encoder and the request reader here are written from the protocol as
the official client (fyers-apiv3 ``data_ws.py``) speaks it, independently of
``trading_helper.brokers.fyers.parsing``, so each checks the other.

    async with FakeFyersServer() as fyers:
        settings = fyers.settings(tmp_path)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import socket
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request
from websockets.http11 import Response as WsResponse

from tests.fakes.sink import wait_until
from trading_helper.config import Settings

NO_VALUE = -(2**31)
SCRIP_FIELD_COUNT = 21  # ltp ... prev_close_price
INDEX_FIELD_COUNT = 6
SEGMENTS = {"NSE": ("1010", "1011"), "BSE": ("1210", "1211"), "MCX": ("1120", "1120")}
SEGMENT_NAMES = {"1010": "nse_cm", "1011": "nse_fo", "1210": "bse_cm", "1211": "bse_fo", "1120": "mcx_fo"}
INDEX_NAMES = {"NSE:NIFTY50-INDEX": "Nifty 50", "NSE:NIFTYBANK-INDEX": "Nifty Bank"}
SESSION_OPEN_S, SESSION_CLOSE_S = (9 * 60 + 15) * 60, (15 * 60 + 30) * 60  # IST seconds of day
IST_OFFSET_S = 19800

DEFAULT_MASTERS = {
    "NSE_CM": (
        "10100000003045,STATE BANK OF INDIA,0,1,0.05,INE062A01020,0915-1530|1815-1915:,2024-12-20,,"
        "NSE:SBIN-EQ,10,10,3045,SBIN,3045,-1.0,XX,10100000003045,None,None,None\n"
        "101000000026000,NIFTY 50,10,1,0.05,,0915-1530|1815-1915:,2024-12-20,,NSE:NIFTY50-INDEX,"
        "10,10,26000,NIFTY50,26000,-1.0,XX,101000000026000,None,None,None\n"
    ),
    "NSE_FO": (
        "101124122635019,NIFTY 24 Dec 26 FUT,11,25,0.05,,0915-1530|1815-1915:,2024-12-20,1735207200,"
        "NSE:NIFTY24DECFUT,10,11,35019,NIFTY,26000,-1.0,XX,101000000026000,None,None,None\n"
        "101124122635100,NIFTY 24 Dec 26 24000 CE,14,25,0.05,,0915-1530|1815-1915:,2024-12-20,1735207200,"
        "NSE:NIFTY24DEC24000CE,10,11,35100,NIFTY,26000,24000.0,CE,101000000026000,None,None,None\n"
    ),
    "BSE_CM": (
        "12100000500112,STATE BANK OF INDIA,0,1,0.05,INE062A01020,0915-1530|1815-1915:,2024-12-20,,"
        "BSE:SBIN-A,12,10,500112,SBIN,500112,-1.0,XX,12100000500112,None,None,None\n"
    ),
    "BSE_FO": "",
    "MCX_COM": (
        "1120250219439488,CRUDEOIL 25 Feb 19 FUT,11,100,1.0,,0900-2355|1815-1915:,2024-12-20,1739989800,"
        "MCX:CRUDEOIL25FEBFUT,11,20,439488,CRUDEOIL,439488,-1.0,XX,1120250219439488,None,None,None\n"
    ),
}


def make_token(hsm_key: str, exp: float) -> str:
    """An access token shaped like Fyers': a JWT whose payload carries ``hsm_key`` and ``exp``."""

    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    payload = {
        "iss": "fake.fyers",
        "sub": "access_token",
        "hsm_key": hsm_key,
        "exp": int(exp),
        "iat": int(time.time()),
    }
    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(payload)}.{secrets.token_urlsafe(16)}"


# --- the server's own encoder ------------------------------------------------------------------
def _frame(body: bytes) -> bytes:
    return struct.pack("!H", len(body)) + body


def control_frame(kind: int, status: bytes = b"K", *extra: tuple[int, bytes]) -> bytes:
    parts = [bytes((kind, 1 + len(extra))), b"\x01", struct.pack("!H", len(status)), status]
    for fid, value in extra:
        parts += [bytes((fid,)), struct.pack("!H", len(value)), value]
    return _frame(b"".join(parts))


def datafeed_frame(message_number: int, records: list[bytes]) -> bytes:
    return _frame(struct.pack("!BIH", 6, message_number, len(records)) + b"".join(records))


def snapshot_record(
    topic_id: int,
    topic: str,
    values: list[int],
    multiplier: int,
    precision: int,
    exchange: str,
    token: str,
    symbol: str,
) -> bytes:
    name = topic.encode()
    head = struct.pack(
        f"!cHB{len(name)}sB{len(values)}i2xHB",
        b"S",
        topic_id,
        len(name),
        name,
        len(values),
        *values,
        multiplier,
        precision,
    )
    tail = b"".join(struct.pack("!B", len(s.encode())) + s.encode() for s in (exchange, token, symbol))
    return head + tail


def update_record(topic_id: int, values: list[int]) -> bytes:
    return struct.pack(f"!cHB{len(values)}i", b"U", topic_id, len(values), *values)


def _read_request(data: bytes) -> tuple[int, dict[int, bytes]]:
    (_size, kind, count), pos, fields = struct.unpack_from("!HBB", data), 4, {}
    for _ in range(count):
        fid, size = struct.unpack_from("!BH", data, pos)
        fields[fid] = data[pos + 3 : pos + 3 + size]
        pos += 3 + size
    return kind, fields


def _read_topics(blob: bytes) -> list[str]:
    count, pos, topics = struct.unpack_from("!H", blob)[0], 2, []
    for _ in range(count):
        size = blob[pos]
        topics.append(blob[pos + 1 : pos + 1 + size].decode())
        pos += 1 + size
    return topics


# --- the simulated market ----------------------------------------------------------------------
@dataclass
class Quote:
    """One topic's market, in raw wire integers (price * 10**precision, precision 2)."""

    topic: str
    symbol: str
    ltp: int
    volume: int = 0
    oi: int = 0
    step: int = 0

    @property
    def is_index(self) -> bool:
        return self.topic.startswith("if|")

    @property
    def is_depth(self) -> bool:
        return self.topic.startswith("dp|")

    def _depth(self) -> list[int]:
        levels = range(1, 6)
        return (
            [self.ltp - 5 * i for i in levels]
            + [self.ltp + 5 * i for i in levels]
            + [100 * i for i in levels]
            + [90 * i for i in levels]
            + [i for i in levels] * 2
        )

    def full(self, now: int) -> list[int]:
        if self.is_depth:
            return self._depth()
        if self.is_index:
            return [self.ltp, self.ltp - 500, now, self.ltp + 900, self.ltp - 900, self.ltp - 100]
        p = self.ltp
        return [
            p,
            self.volume,
            now,
            now,
            150,
            175,
            p - 5,
            p + 5,
            10,
            9000,
            8000,
            p - 2,
            self.oi,
            p - 1000,
            p + 1000,
            p + 5000,
            p - 5000,
            p - 10000,
            p + 10000,
            p - 300,
            p - 400,
        ]

    def advance(self, now: int) -> list[int]:
        """Move the market one step; NO_VALUE for every field this step did not change."""
        self.step += 1
        self.ltp += 5 if self.step % 3 else -5
        if self.is_depth:  # the book moves with the price; sizes and orders stay
            return self._depth()[:10] + [NO_VALUE] * 20
        values = [NO_VALUE] * (INDEX_FIELD_COUNT if self.is_index else SCRIP_FIELD_COUNT)
        values[0] = self.ltp
        values[2] = now
        if not self.is_index:
            self.volume += 25
            values[1], values[3], values[8] = self.volume, now, 25
            if self.oi and self.step % 2 == 0:
                self.oi += 75
                values[12] = self.oi
        return values


@dataclass
class Connection:
    number: int
    ws: ServerConnection
    hsm_key: str = ""
    authed: bool = False
    stalled: bool = False
    topics: dict[str, int] = field(default_factory=dict)  # topic -> topic id
    message_number: int = 0
    pusher: asyncio.Task[None] | None = None


class FakeFyersServer:
    def __init__(self, app_id: str = "FAKEAPP-100", secret: str = "fake-secret") -> None:
        self.app_id, self.secret = app_id, secret
        self.access_token = self.issue_token()
        self.symbol_masters: dict[str, str] = dict(DEFAULT_MASTERS)
        # REST knobs and records
        self.auth_failure_status = 401  # HTTP status of an auth failure (200: Fyers' code -16 only)
        self.fail_statuses: list[int] = []  # statuses for the next /data calls (429, 500 ...)
        self.history_calls: Counter[str] = Counter()
        self.history_requests: list[dict[str, str]] = []
        self.validate_requests: list[dict[str, Any]] = []
        self.symbol_token_auth: list[str] = []
        self.invalid_symbols: set[str] = set()  # unknown to symbol-token and history (code -300)
        self.issued_auth_codes: set[str] = set()
        # data socket knobs and records
        self.update_interval_s = 0.05
        self.updates_per_push = 50
        self.ack_interval = 0
        self.reject_upgrade_status: int | None = None
        self.connections: list[Connection] = []
        self.subscribe_messages: list[tuple[int, list[str]]] = []
        self.unsubscribe_messages: list[tuple[int, list[str]]] = []
        self.upgrade_headers: list[dict[str, str]] = []
        self.acks: list[int] = []
        self.pings = 0
        self._fytokens: dict[str, str] = {}
        self._topic_symbols: dict[str, str] = {}
        self._quotes: dict[str, Quote] = {}
        self._http_server: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._http_port = 0
        self._ws: Server | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> FakeFyersServer:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._http_port = sock.getsockname()[1]
        app = Starlette(
            routes=[
                Route("/api/v3/generate-authcode", self._generate_authcode),
                Route("/api/v3/validate-authcode", self._validate_authcode, methods=["POST"]),
                Route("/data/history", self._history),
                Route("/data/symbol-token", self._symbol_token, methods=["POST"]),
                Route("/sym_details/{name}.csv", self._symbol_master),
            ]
        )
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", ws="none", http="h11", access_log=False
        )
        self._http_server = uvicorn.Server(config)
        self._http_task = asyncio.create_task(self._http_server.serve(sockets=[sock]))
        server = self._http_server
        await wait_until(lambda: server.started or self._http_task is None or self._http_task.done())
        if self._http_task.done():
            await self._http_task  # startup failed: raise its error
        self._ws = await serve(
            self._ws_handler,
            "127.0.0.1",
            0,
            process_request=self._check_upgrade,
            compression=None,
            ping_interval=None,
            close_timeout=0.5,
            max_size=2**22,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop_connections()
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()
        if self._http_server is not None and self._http_task is not None:
            self._http_server.should_exit = True
            await self._http_task

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self._http_port}"

    @property
    def ws_url(self) -> str:
        assert self._ws is not None
        return f"ws://127.0.0.1:{next(iter(self._ws.sockets)).getsockname()[1]}"

    def settings(self, token_dir: Path, **overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            BROKER="fyers",
            FYERS_API_URL=self.api_url,
            FYERS_WS_URL=self.ws_url,
            FYERS_SYMBOL_MASTER_URL=f"{self.api_url}/sym_details",
            FYERS_APP_ID=self.app_id,
            FYERS_SECRET_KEY=self.secret,
            FYERS_ACCESS_TOKEN="",
            TOKEN_DIR=token_dir,
        )
        values.update(overrides)
        return Settings(**values)

    # --- tokens --------------------------------------------------------------------------------
    def issue_token(self, valid_for_s: float = 86_400) -> str:
        return make_token(secrets.token_hex(28), time.time() + valid_for_s)

    def revoke_all_tokens(self) -> None:
        """Every token issued so far stops working (REST and socket), as at 06:00 IST."""
        self.access_token = "revoked"

    def _hsm_key_ok(self, hsm_key: str) -> bool:
        return self._payload(self.access_token).get("hsm_key") == hsm_key

    @staticmethod
    def _payload(token: str) -> dict[str, Any]:
        with contextlib.suppress(IndexError, ValueError):
            part = token.split(".")[1]
            loaded = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
            return loaded if isinstance(loaded, dict) else {}
        return {}

    def _token_ok(self, token: str) -> bool:
        return token == self.access_token and self._payload(token).get("exp", 0) > time.time()

    def _auth_error(self) -> JSONResponse:
        body = {"s": "error", "code": -16, "message": "Could not authenticate the user"}
        return JSONResponse(body, status_code=self.auth_failure_status)

    def _injected_failure(self) -> Response | None:
        if not self.fail_statuses:
            return None
        status = self.fail_statuses.pop(0)
        headers = {"Retry-After": "0"} if status == 429 else None
        return JSONResponse({"s": "error", "code": status, "message": "injected"}, status, headers=headers)

    # --- REST ----------------------------------------------------------------------------------
    async def _generate_authcode(self, request: HttpRequest) -> Response:
        q = request.query_params
        if q.get("client_id") != self.app_id or q.get("response_type") != "code":
            return JSONResponse({"s": "error", "code": -100, "message": "invalid app id"}, 400)
        code = make_token(secrets.token_hex(8), time.time() + 300)
        self.issued_auth_codes.add(code)
        return RedirectResponse(
            f"{q['redirect_uri']}?s=ok&code=200&auth_code={code}&state={q.get('state', '')}", 302
        )

    async def _validate_authcode(self, request: HttpRequest) -> Response:
        body = await request.json()
        self.validate_requests.append(body)
        expected = hashlib.sha256(f"{self.app_id}:{self.secret}".encode()).hexdigest()
        if body.get("appIdHash") != expected:
            return JSONResponse({"s": "error", "code": -371, "message": "invalid app id hash"}, 400)
        if body.get("grant_type") != "authorization_code" or body.get("code") not in self.issued_auth_codes:
            return JSONResponse({"s": "error", "code": -413, "message": "invalid auth code"}, 400)
        self.issued_auth_codes.discard(body["code"])
        self.access_token = self.issue_token()
        return JSONResponse(
            {
                "s": "ok",
                "code": 200,
                "message": "",
                "access_token": self.access_token,
                "refresh_token": secrets.token_urlsafe(16),
            }
        )

    async def _symbol_master(self, request: HttpRequest) -> Response:
        text = self.symbol_masters.get(request.path_params["name"])
        return PlainTextResponse(text) if text is not None else PlainTextResponse("no such file", 404)

    async def _history(self, request: HttpRequest) -> Response:
        q = dict(request.query_params)
        self.history_calls[q.get("symbol", "")] += 1  # every call, refused ones included
        self.history_requests.append(q)
        auth = request.headers.get("authorization", "")
        if not auth.startswith(f"{self.app_id}:") or not self._token_ok(auth.split(":", 1)[1]):
            return self._auth_error()
        if (failure := self._injected_failure()) is not None:
            return failure
        if q.get("symbol") in self.invalid_symbols:
            return JSONResponse({"s": "error", "code": -300, "message": "Invalid symbol provided"}, 400)
        first, last, resolution = int(q["range_from"]), int(q["range_to"]), q["resolution"]
        limit_days = 366 if resolution == "D" else 100
        if q.get("date_format") != "0" or last - first > limit_days * 86_400 or last < first:
            return JSONResponse({"s": "error", "code": -50, "message": "invalid input: range"}, 400)
        candles = history_candles(q["symbol"], resolution, first, last, q.get("oi_flag") == "1")
        return JSONResponse({"s": "ok" if candles else "no_data", "candles": candles})

    async def _symbol_token(self, request: HttpRequest) -> Response:
        auth = request.headers.get("authorization", "")
        self.symbol_token_auth.append(auth)
        if not self._token_ok(auth.split(":", 1)[-1]):
            return self._auth_error()
        if (failure := self._injected_failure()) is not None:
            return failure
        symbols = (await request.json()).get("symbols", [])
        valid = {s: self.fytoken(s) for s in symbols if s not in self.invalid_symbols and self.fytoken(s)}
        return JSONResponse(
            {
                "s": "ok",
                "validSymbol": valid,
                "invalidSymbol": [s for s in symbols if s not in valid],
                "message": "",
            }
        )

    def fytoken(self, symbol: str) -> str:
        """A stable fytoken for any ``NSE:/BSE:/MCX:`` symbol (the first seen gets 1000, ...)."""
        exchange, _, name = symbol.partition(":")
        if exchange not in SEGMENTS or not name:
            return ""
        if symbol not in self._fytokens:
            derivative = name.endswith(("FUT", "CE", "PE")) or exchange == "MCX"
            prefix = SEGMENTS[exchange][1 if derivative else 0]
            number = str(1000 + len(self._fytokens))
            self._fytokens[symbol] = f"{prefix}000000{number}"
            # the topic this symbol streams under (data_ws.SymbolConversion's rules)
            if name.endswith("-INDEX"):
                topic = f"if|{SEGMENT_NAMES[prefix]}|{INDEX_NAMES.get(symbol, name.rsplit('-', 1)[0])}"
            else:
                topic = f"sf|{SEGMENT_NAMES[prefix]}|{number}"
                self._topic_symbols[f"dp|{SEGMENT_NAMES[prefix]}|{number}"] = symbol
            self._topic_symbols[topic] = symbol
        return self._fytokens[symbol]

    def _quote_for_topic(self, topic: str) -> Quote | None:
        if topic not in self._quotes:
            symbol = self._topic_symbols.get(topic)
            if symbol is None:
                return None
            segment = topic.split("|")[1]
            seed = zlib.crc32(symbol.encode()) % 50_000
            self._quotes[topic] = Quote(
                topic,
                symbol,
                ltp=100_000 + seed,
                volume=1_000 + seed,
                oi=(20_000 + seed) if segment.endswith("_fo") else 0,
            )
        return self._quotes[topic]

    # --- data socket ---------------------------------------------------------------------------
    def _check_upgrade(self, connection: ServerConnection, request: Request) -> WsResponse | None:
        self.upgrade_headers.append({k.lower(): v for k, v in request.headers.raw_items()})
        if self.reject_upgrade_status is not None:
            return connection.respond(HTTPStatus(self.reject_upgrade_status), "refused\n")
        return None

    async def _ws_handler(self, ws: ServerConnection) -> None:
        conn = Connection(len(self.connections) + 1, ws)
        self.connections.append(conn)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    await self._on_request(conn, message)
        except ConnectionClosed:
            pass
        finally:
            if conn.pusher is not None:
                conn.pusher.cancel()

    async def _on_request(self, conn: Connection, message: bytes) -> None:
        if message == bytes([0, 1, 11]):
            self.pings += 1
            return
        kind, fields = _read_request(message)
        if kind == 1:
            conn.hsm_key = fields.get(1, b"").decode()
            conn.authed = self._hsm_key_ok(conn.hsm_key)
            status = b"K" if conn.authed else b"F"
            await conn.ws.send(
                control_frame(
                    1, status, (2, struct.pack("!H", self.ack_interval)), (3, b'{"fake": "master data"}')
                )
            )
            if conn.authed:
                conn.pusher = asyncio.create_task(self._push(conn))
        elif not conn.authed:
            return
        elif kind == 12:
            await conn.ws.send(control_frame(12))
        elif kind == 3:
            self.acks.append(struct.unpack("!I", fields[1])[0])
        elif kind in (4, 5):
            topics = _read_topics(fields[1])
            (self.subscribe_messages if kind == 4 else self.unsubscribe_messages).append(
                (conn.number, topics)
            )
            await conn.ws.send(control_frame(kind))
            if kind == 5:
                for topic in topics:
                    conn.topics.pop(topic, None)
                return
            fresh = [t for t in topics if t not in conn.topics and self._quote_for_topic(t) is not None]
            for topic in fresh:
                conn.topics[topic] = len(conn.topics) + 1
            await self._send_snapshots(conn, fresh)

    async def _send_snapshots(self, conn: Connection, topics: list[str]) -> None:
        now = int(time.time())
        for i in range(0, len(topics), 250):
            records = []
            for topic in topics[i : i + 250]:
                quote = self._quotes[topic]
                exchange, token = quote.symbol.split(":")[0], self._fytokens[quote.symbol][10:]
                records.append(
                    snapshot_record(
                        conn.topics[topic],
                        topic,
                        quote.full(now),
                        1,
                        2,
                        exchange,
                        token,
                        quote.symbol.split(":")[1],
                    )
                )
            await self._send_feed(conn, records)

    async def _send_feed(self, conn: Connection, records: list[bytes]) -> None:
        conn.message_number += 1
        await conn.ws.send(datafeed_frame(conn.message_number, records))

    async def _push(self, conn: Connection) -> None:
        """Incremental updates for the subscribed topics, round robin, until the socket ends."""
        cursor = 0
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.update_interval_s)
                if conn.stalled or not conn.topics:
                    continue
                topics = list(conn.topics)
                batch = [
                    topics[(cursor + k) % len(topics)] for k in range(min(self.updates_per_push, len(topics)))
                ]
                cursor += len(batch)
                now = int(time.time())
                await self._send_feed(
                    conn, [update_record(conn.topics[t], self._quotes[t].advance(now)) for t in batch]
                )

    # --- faults --------------------------------------------------------------------------------
    def live(self) -> list[Connection]:
        return [c for c in self.connections if c.ws.state.name == "OPEN"]

    def drop_connections(self) -> None:
        """Cut every open socket without a closing handshake (a network drop)."""
        for conn in self.live():
            conn.ws.transport.abort()

    def stall(self) -> None:
        """Open sockets go silent: no data, and no pong either (reading stops)."""
        for conn in self.live():
            conn.stalled = True
            conn.ws.transport.pause_reading()

    async def send_raw(self, data: bytes) -> None:
        for conn in self.live():
            await conn.ws.send(data)

    def truncated_frame(self) -> bytes:
        """A datafeed frame cut in the middle of its first snapshot record."""
        record = snapshot_record(999, "sf|nse_cm|1", [1] * SCRIP_FIELD_COUNT, 1, 2, "NSE", "1", "X")
        return datafeed_frame(1, [record])[:-20]


def history_candles(symbol: str, resolution: str, first: int, last: int, with_oi: bool) -> list[list[float]]:
    """Deterministic candles for every bucket start in [first, last]: minute resolutions inside
    09:15-15:30 IST on weekdays, days at 00:00 IST on weekdays."""
    seed = zlib.crc32(symbol.encode()) % 1000
    step = 86_400 if resolution == "D" else int(resolution) * 60
    out: list[list[float]] = []
    day = (first + IST_OFFSET_S) // 86_400 * 86_400 - IST_OFFSET_S  # 00:00 IST of the first day
    while day <= last:
        if ((day + IST_OFFSET_S) // 86_400 + 3) % 7 < 5:  # 1970-01-01 was a Thursday
            starts = [day] if resolution == "D" else range(day + SESSION_OPEN_S, day + SESSION_CLOSE_S, step)
            for t in starts:
                if first <= t <= last:
                    k = t // step
                    o = 100 + seed + k % 17
                    row: list[float] = [t, o, o + 3, o - 2, o + 1, 1000 + k % 97]
                    out.append([*row, 5000 + k % 13] if with_oi else row)
        day += 86_400
    return out
