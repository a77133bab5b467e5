"""``trading-helper login kite``: the Kite Connect login flow, from login URL to stored token.

1. The user opens ``{KITE_LOGIN_URL}?api_key=..&v=3`` and logs in.
2. Kite redirects the browser to the app's redirect URL (set in the Kite developer console) with
   ``?request_token=..&action=login&status=success``. We take that token pasted (the token or the
   whole redirect URL), or catch the redirect with a one-shot listener on 127.0.0.1 when the
   redirect URL points there (``--listen-port``).
3. ``POST /session/token`` with ``checksum = sha256(api_key + request_token + api_secret)`` gives
   the access token, stored with mode 0600 where the service re-reads it before each connect.
   It expires at 06:00 IST the next day.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from trading_helper.brokers.kite.constants import BROKER_NAME, login_url
from trading_helper.brokers.kite.http import KiteHttpClient
from trading_helper.brokers.tokens import redact, save_token
from trading_helper.config import Settings
from trading_helper.errors import ConfigError, LoginRequired

_PAGE_OK = "Kite login received by trading-helper. You can close this tab."
_PAGE_NO_TOKEN = "No request_token in this request: was the login cancelled? Try again."


def extract_request_token(text: str) -> str:
    """A pasted request_token, or the whole redirect URL it came in."""
    text = text.strip()
    if "request_token=" in text:
        return parse_qs(urlsplit(text).query).get("request_token", [""])[0].strip()
    return text


async def wait_for_request_token(port: int, *, host: str = "127.0.0.1", within_s: float = 300.0) -> str:
    """Listen on ``host:port`` until Kite's redirect brings a request_token, answer it, and stop."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[str] = loop.create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            query = parse_qs(urlsplit(target[1] if len(target) > 1 else "/").query)
            token = query.get("request_token", [""])[0]
            ok = bool(token) and query.get("status", ["success"])[0] == "success"
            if ok and not got.done():
                got.set_result(token)
            page = (_PAGE_OK if ok else _PAGE_NO_TOKEN).encode()
            status = "200 OK" if ok else "400 Bad Request"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(page)}\r\nConnection: close\r\n\r\n".encode()
                + page
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a probe or a closed tab: keep waiting for the real redirect
        finally:
            writer.close()

    try:
        server = await asyncio.start_server(handle, host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen for the Kite redirect on {host}:{port}: {exc.strerror}") from exc
    try:
        async with asyncio.timeout(within_s):
            return await got
    except TimeoutError:
        raise LoginRequired(f"no Kite redirect reached {host}:{port} within {within_s:g}s") from None
    finally:
        server.close()
        await server.wait_closed()


async def run_login(
    settings: Settings,
    *,
    request_token: str | None = None,
    listen_port: int | None = None,
    wait_s: float = 300.0,
    echo: Callable[[str], object] = print,
) -> Path:
    """The whole flow; returns where the token was stored. Prints the token only redacted."""
    if not settings.KITE_API_KEY or not settings.KITE_API_SECRET.get_secret_value():
        raise ConfigError("set KITE_API_KEY and KITE_API_SECRET (from the Kite developer console) first")
    if request_token:  # the login already happened in a browser: no URL to open
        token = extract_request_token(request_token)
    elif listen_port:
        echo(f"Open this URL, log in, and let Kite redirect you:\n  {login_url(settings)}")
        echo(f"Waiting for the redirect on http://127.0.0.1:{listen_port}/ (the app's redirect URL) ...")
        token = await wait_for_request_token(listen_port, within_s=wait_s)
    else:
        echo(f"Open this URL, log in, and let Kite redirect you:\n  {login_url(settings)}")
        pasted = await asyncio.to_thread(input, "Paste the request_token (or the whole redirect URL): ")
        token = extract_request_token(pasted)
    if not token:
        raise LoginRequired("no request_token given")
    async with KiteHttpClient(settings) as api:
        session = await api.create_session(token)
    path = save_token(settings, BROKER_NAME, session.access_token)
    who = f" for {session.user_id}" if session.user_id else ""
    echo(
        f"Kite access token {redact(session.access_token)}{who} stored in {path} (mode 0600); "
        "it expires at 06:00 IST tomorrow."
    )
    return path
