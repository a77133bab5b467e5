"""Local receivers of alert deliveries, on real sockets (served by ``tests.api.server.serve``).

- :class:`WebhookReceiver`: checks each request's HMAC signature like a real receiver would,
  answers 503 to the first ``fail_first`` deliveries, and keeps what it accepted, dropping
  repeats by ``Idempotency-Key`` (``unique``) while counting every request (``requests``).
- :class:`TelegramStandIn`: the Bot API's HTTP shape (``POST /bot<token>/<method>``, form or JSON
  parameters, ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code", "description"}``)
  for the two methods alerts use, ``getMe`` and ``sendMessage``; ``fail_first`` answers 429 with
  ``parameters.retry_after`` as Telegram does when flooded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trading_helper.alerts.delivery import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify


@dataclass
class WebhookReceiver:
    secret: bytes
    fail_first: int = 0
    requests: int = 0
    bad_signatures: int = 0
    unique: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (key, time.time() when accepted) of each first delivery
    arrivals: list[tuple[str, float]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            self.requests += 1
            headers = request.headers
            if not verify(
                self.secret, headers.get(TIMESTAMP_HEADER, ""), body, headers.get(SIGNATURE_HEADER, "")
            ):
                self.bad_signatures += 1
                return Response(status_code=401)
            if self.requests <= self.fail_first:
                return Response(status_code=503)
            key = headers[KEY_HEADER]
            if key not in self.unique:
                self.unique[key] = json.loads(body)
                self.arrivals.append((key, time.time()))
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@dataclass
class TelegramStandIn:
    token: str
    fail_first: int = 0
    calls: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def method(request: Request) -> Response:
            if request.path_params["token"] != self.token:
                return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"}, 401)
            if request.headers.get("content-type", "").startswith("application/json"):
                params = dict(await request.json())
            else:  # what python-telegram-bot sends: application/x-www-form-urlencoded
                params = dict(parse_qsl((await request.body()).decode()))
            name = request.path_params["method"]
            if name == "getMe":
                me = {"id": 4242, "is_bot": True, "first_name": "TH", "username": "th_alerts_bot"}
                return JSONResponse({"ok": True, "result": me})
            if name != "sendMessage":
                return JSONResponse({"ok": False, "error_code": 404, "description": "Not Found"}, 404)
            self.calls += 1
            if self.calls <= self.fail_first:
                return JSONResponse(
                    {
                        "ok": False,
                        "error_code": 429,
                        "description": "Too Many Requests: retry after 1",
                        "parameters": {"retry_after": 1},
                    },
                    429,
                )
            if str(params.get("chat_id", "")) == "0":
                return JSONResponse(
                    {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, 400
                )
            self.sent.append(params)
            chat = {"id": int(params["chat_id"]), "type": "private", "first_name": "trader"}
            message = {
                "message_id": len(self.sent),
                "date": int(time.time()),
                "chat": chat,
                "text": params["text"],
            }
            return JSONResponse({"ok": True, "result": message})

        return Starlette(routes=[Route("/bot{token}/{method}", method, methods=["GET", "POST"])])
