"""Bearer-token authentication for ``/api`` routes and the WebSocket.

One token (``API_TOKEN``); when none is configured a random one is generated for this process and
logged once, so the API is never open by accident. Compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from trading_helper.config import Settings

log = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API_TOKEN>`")


def api_token(settings: Settings) -> tuple[str, bool]:
    """The configured token, or a fresh random one; the flag says it was generated."""
    configured = settings.API_TOKEN.get_secret_value().strip()
    if configured:
        return configured, False
    return secrets.token_urlsafe(24), True


def token_matches(expected: str, given: str | None) -> bool:
    if not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


UNAUTHORIZED = "missing or wrong bearer token: send 'Authorization: Bearer <API_TOKEN>'"


def bearer_of(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    scheme, _, credentials = (authorization or "").partition(" ")
    return (credentials.strip() or None) if scheme.lower() == "bearer" else None


class BearerGate:
    """Pure ASGI: every HTTP request under ``/api`` shows the bearer token before its body is read
    (FastAPI would read and parse the body before ``require_token`` runs). The WebSocket checks its
    ``?token=`` itself; ``require_token`` stays on the routers for the OpenAPI security scheme."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and (path == "/api" or path.startswith("/api/")):
            if not token_matches(self.token, bearer_of(Headers(scope=scope).get("authorization"))):
                answer = JSONResponse(
                    {"detail": UNAUTHORIZED, "code": "unauthorized"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    given = (
        credentials.credentials
        if credentials is not None and credentials.scheme.lower() == "bearer"
        else None
    )
    if not token_matches(request.app.state.api_token, given):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=UNAUTHORIZED,
            headers={"WWW-Authenticate": "Bearer"},
        )
