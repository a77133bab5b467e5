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


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    given = credentials.credentials if credentials is not None and credentials.scheme.lower() == "bearer" else None
    if not token_matches(request.app.state.api_token, given):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong bearer token: send 'Authorization: Bearer <API_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
