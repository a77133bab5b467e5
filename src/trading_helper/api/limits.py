"""The request body limit: a pure ASGI middleware that counts a body while it arrives.

FastAPI reads and JSON-parses the whole body before any dependency runs, so the limit has to sit
in front of the application. Why not ``FastAPI(max_body_size=...)`` (Starlette's
``RequestBodyLimitMiddleware``, new in Starlette 1.x): it is placed outside every user middleware,
so an oversized request without a token gets 413 before the bearer check can answer 401, and it
answers a declared oversize body with ``text/plain`` past the application's error handlers,
not the API's documented ``{"detail", "code"}``. This one runs after ``BearerGate``. A declared ``Content-Length`` over the
limit is refused before a byte is read; a chunked body is refused as soon as the running count
passes the limit, and whatever answer the application would have made is replaced by the 413.
The connection is kept: uvicorn discards the rest of the body as it arrives (nothing is held), so
a client still sending reads its 413 instead of a reset connection.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large(max_bytes: int) -> JSONResponse:
    return JSONResponse(
        {"detail": f"request body too large: at most {max_bytes} bytes", "code": "body_too_large"},
        status_code=413,
    )


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_bytes:
            await too_large(self.max_bytes)(scope, receive, send)
            return
        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # the application sees a client that went away and stops reading
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the application's answer to a cut body; the 413 below replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await too_large(self.max_bytes)(scope, receive, send)
