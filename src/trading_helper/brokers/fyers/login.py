"""``trading-helper login fyers``: the Fyers API v3 auth-code flow.

1. Open ``{FYERS_API_URL}/api/v3/generate-authcode?client_id&redirect_uri&response_type=code&state``
   (fyersModel.SessionModel.generate_authcode) and log in at Fyers.
2. Fyers redirects to ``FYERS_REDIRECT_URI?s=ok&code=200&auth_code=...&state=...``: a one-shot
   listener on that (local) address catches it, or the user pastes the redirect URL (``--paste``:
   inside a container, where the browser cannot reach the listener) or the auth code.
3. ``POST /api/v3/validate-authcode`` with ``appIdHash = sha256(f"{app_id}:{secret}")`` gives the
   access token, stored with mode 0600 where the service re-reads it; only a redacted form is
   ever printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from trading_helper.brokers.fyers import constants as C
from trading_helper.brokers.fyers.http import FyersHttp
from trading_helper.brokers.tokens import redact, save_token
from trading_helper.config import Settings
from trading_helper.errors import ConfigError, LoginRequired

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_PAGE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
    b"Fyers login received by trading-helper. You can close this tab.\n"
)
_NOT_IT = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nnot here\n"


def authcode_url(settings: Settings, state: str) -> str:
    query = urlencode(
        {
            "client_id": settings.FYERS_APP_ID,
            "redirect_uri": settings.FYERS_REDIRECT_URI,
            "response_type": "code",
            "state": state,
        }
    )
    return f"{settings.FYERS_API_URL.rstrip('/')}{C.PATH_GENERATE_AUTHCODE}?{query}"


def auth_code_from_redirect(target: str, state: str) -> str:
    """The auth code in a redirect path/URL, after checking its status and state."""
    query = parse_qs(urlsplit(target).query)
    if query.get("s", ["ok"])[0] != "ok":
        raise LoginRequired(f"Fyers login failed: {query.get('message', query.get('s', ['?']))[0]}")
    if query.get("state", [""])[0] != state:
        raise LoginRequired("the redirect's state does not match this login: start again")
    code = query.get("auth_code", [""])[0]
    if not code:
        raise LoginRequired("the redirect carries no auth_code")
    return code


def is_local_redirect(redirect_uri: str) -> bool:
    """A redirect this process can catch: http on a loopback host with a port."""
    parts = urlsplit(redirect_uri)
    return parts.hostname in _LOCAL_HOSTS and parts.port is not None


class RedirectCatcher:
    """A one-shot HTTP listener on the redirect URI's host and port (loopback only)."""

    def __init__(self, redirect_uri: str, state: str) -> None:
        parts = urlsplit(redirect_uri)
        if not is_local_redirect(redirect_uri) or parts.hostname is None or parts.port is None:
            raise ConfigError(
                f"FYERS_REDIRECT_URI={redirect_uri!r} is not a local http://127.0.0.1:PORT/... address: "
                "pass --auth-code with the code from the redirect instead"
            )
        self._host, self._port, self._path = parts.hostname, parts.port, parts.path or "/"
        self._state = state
        self._result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RedirectCatcher:
        self._server = await asyncio.start_server(self._client, self._host, self._port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def auth_code(self, timeout_s: float) -> str:
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(self._result)
        except TimeoutError as exc:
            raise LoginRequired(f"no redirect from Fyers within {timeout_s:g}s: try again") from exc

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
            if urlsplit(target).path != self._path or self._result.done():
                writer.write(_NOT_IT)
                return
            try:
                code = auth_code_from_redirect(target, self._state)
            except LoginRequired as exc:
                self._result.set_exception(exc)
            else:
                self._result.set_result(code)
            writer.write(_PAGE)
        except (OSError, TimeoutError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            with contextlib.suppress(OSError):
                await writer.drain()
                writer.close()


def pasted_auth_code(text: str, state: str | None) -> str:
    """An auth code pasted as it is, or the whole redirect URL it came in (its state checked
    against ``state`` when this login issued one)."""
    text = text.strip()
    if "auth_code=" not in text:
        return text
    if state is None:
        return parse_qs(urlsplit(text).query).get("auth_code", [""])[0].strip()
    return auth_code_from_redirect(text, state)


async def _read_line(prompt: str) -> str:
    return await asyncio.to_thread(input, prompt)


async def login(
    settings: Settings,
    *,
    auth_code: str | None = None,
    paste: bool = False,
    timeout_s: float = 300.0,
    echo: Callable[[str], None] = print,
    read_line: Callable[[str], Awaitable[str]] = _read_line,
) -> Path:
    """Run the auth-code flow and store the access token; returns where it was stored.

    ``auth_code``: the code (or the redirect URL) from a login done already. ``paste``: print the
    login URL and read the redirect URL back (in a container the browser cannot reach the
    redirect listener on the container's 127.0.0.1; the page fails to load, its address holds
    the code). Otherwise a listener on FYERS_REDIRECT_URI catches the redirect, when that address
    is local; when it is not, the flow falls back to pasting."""
    if not settings.FYERS_APP_ID or not settings.FYERS_SECRET_KEY.get_secret_value():
        raise ConfigError("set FYERS_APP_ID and FYERS_SECRET_KEY (from myapi.fyers.in) before logging in")
    if auth_code is not None:
        auth_code = pasted_auth_code(auth_code, None)
    elif paste or not is_local_redirect(settings.FYERS_REDIRECT_URI):
        state = secrets.token_urlsafe(12)
        echo("Open this URL and log in to Fyers:")
        echo(authcode_url(settings, state))
        echo(
            f"Fyers then redirects to {settings.FYERS_REDIRECT_URI}?...auth_code=...; if that page does not load, "
            "copy its address from the browser."
        )
        auth_code = pasted_auth_code(await read_line("Paste the redirect URL (or the auth_code): "), state)
    else:
        state = secrets.token_urlsafe(12)
        async with RedirectCatcher(settings.FYERS_REDIRECT_URI, state) as catcher:
            echo("Open this URL, log in to Fyers, and come back here:")
            echo(authcode_url(settings, state))
            echo(
                f"Waiting for the redirect to {settings.FYERS_REDIRECT_URI} ... (in a container, use --paste)"
            )
            auth_code = await catcher.auth_code(timeout_s)
    if not auth_code:
        raise LoginRequired("no auth_code given")
    http = FyersHttp(settings, max_attempts=3)
    try:
        token = await http.validate_authcode(auth_code, settings.FYERS_SECRET_KEY.get_secret_value())
    finally:
        await http.aclose()
    path = save_token(settings, C.BROKER_NAME, token)
    echo(f"Fyers access token {redact(token)} stored in {path} (mode 0600)")
    return path
