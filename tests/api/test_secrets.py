"""No secret set in the environment appears in any log line or response of a run through the API,
even when the broker (or a proxy before it) echoes the Authorization header into its errors, and
text from outside cannot forge a log line.

The run is ``trading-helper serve`` in its own process (its real logging set-up), against the fake
Kite over real sockets; every byte it writes to stdout/stderr is searched."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import connect

from tests.api.conftest import api_redis_url
from tests.api.process import serve_process
from tests.fakes.kite_server import FakeKiteServer

FORGED = "ERROR trading_helper.api: forged line"


def unique(name: str) -> str:
    return f"{name.lower().replace('_', '')}{uuid.uuid4().hex[:12]}"


def with_password(dsn: str, password: str) -> str:
    """The test server trusts local connections, so any password connects; it must still never show."""
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(
        (parts.scheme, f"{user}:{quote(password, safe='')}@{host}", parts.path, parts.query, parts.fragment)
    )


async def test_no_secret_from_the_environment_reaches_a_log_line_or_a_response(
    db_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    secrets = {
        name: unique(name)
        for name in (
            "KITE_API_KEY",
            "KITE_API_SECRET",
            "KITE_ACCESS_TOKEN",
            "FYERS_SECRET_KEY",
            "FYERS_ACCESS_TOKEN",
            "API_TOKEN",
            "GRAFANA_DB_PASSWORD",
            "DB_PASSWORD",
        )
    }
    secrets["DB_PASSWORD"] = "p@ss:" + secrets["DB_PASSWORD"]  # a password holding '@' and ':'
    answers: list[str] = []

    def keep(resp: httpx.Response) -> httpx.Response:
        answers.append(f"{resp.status_code} {dict(resp.headers)} {resp.text}")
        return resp

    async with FakeKiteServer(
        api_key=secrets["KITE_API_KEY"],
        api_secret=secrets["KITE_API_SECRET"],
        access_token=secrets["KITE_ACCESS_TOKEN"],
    ) as kite:
        env = {
            "DATABASE_URL": with_password(db_dsn, secrets["DB_PASSWORD"]),
            "REDIS_URL": api_redis_url(redis_url),
            "BROKER": "kite",
            "KITE_API_URL": kite.api_url,
            "KITE_WS_URL": kite.ws_url,
            "KITE_LOGIN_URL": kite.login_url,
            "TOKEN_DIR": str(tmp_path / "tokens"),
            "LOG_LEVEL": "DEBUG",
            **{k: v for k, v in secrets.items() if k != "DB_PASSWORD"},
        }
        async with serve_process(env, tmp_path) as served:
            auth = {"Authorization": f"Bearer {secrets['API_TOKEN']}"}
            async with (
                httpx.AsyncClient(base_url=served.url, headers=auth, timeout=30) as client,
                httpx.AsyncClient(base_url=served.url, timeout=30) as anonymous,
            ):
                keep(await anonymous.get("/health/db"))
                keep(await anonymous.post("/api/candles", content=b"{bad"))
                keep(
                    await anonymous.get(
                        "/api/status", headers={"Authorization": f"Bearer {secrets['FYERS_ACCESS_TOKEN']}"}
                    )
                )  # someone else's secret
                assert keep(await client.post("/api/instruments/sync")).status_code == 200

                # the broker (or a proxy) answers errors that quote the request's Authorization header,
                # with a newline and a bidi override to forge a log line
                kite.failure_message = f"proxy refused Authorization: {{authorization}}\n{FORGED} \u202eok"
                kite.rest_failures = [400]
                sync = keep(await client.post("/api/instruments/sync"))
                assert sync.status_code == 502 and "proxy refused" in sync.text and "***" in sync.text
                for status in (400, 403):
                    kite.history_failures = [status]
                    candles = keep(
                        await client.get(
                            "/api/candles",
                            params={
                                "instrument": "NSE:RELIANCE",
                                "interval": "5m",
                                "from": f"2024-03-0{4 if status == 400 else 5}T09:15:00+05:30",
                                "to": f"2024-03-0{4 if status == 400 else 5}T15:30:00+05:30",
                            },
                        )
                    )
                    assert (
                        candles.status_code == 200 and "proxy refused" in candles.json()["backfill"]["error"]
                    )
                for ref in ("²", "NSE:NOPE", "\u202eRELIANCE"):
                    keep(await client.get(f"/api/quotes/{ref}"))
                ws_url = (
                    served.url.replace("http://", "ws://") + f"/api/ws/ticks?token={secrets['API_TOKEN']}"
                )
                async with connect(ws_url) as ws:
                    await ws.send('{"action": "subscribe", "instruments": ["NSE:RELIANCE"]}')
                    answers.append(str(await asyncio.wait_for(ws.recv(), 10)))
        log = served.output.read_text(errors="replace")

    assert (
        "proxy refused" in log
    )  # the broker's text was logged (redacted), so the search below means something
    assert "WebSocket /api/ws/ticks?token=***" in log  # uvicorn logs the URL, token hidden
    everything = log + "\n".join(answers)
    for name, value in secrets.items():
        assert value not in everything and quote(value, safe="") not in everything, f"{name} leaked"
        assert value.split(":")[-1] not in everything, f"{name} leaked in part"
    assert not any(line.startswith(FORGED) for line in log.splitlines()), "a broker text forged a log line"
    assert "\u202e" not in log
