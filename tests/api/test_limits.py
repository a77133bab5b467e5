"""The edge of the HTTP API: the bearer token is checked before a body is read, and a body is
counted while it arrives (413 past ``API_MAX_BODY_BYTES``), so an anonymous client cannot make
the process that ingests hold its upload."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.api.conftest import API_TOKEN, Api, api_redis_url
from tests.api.process import serve_process

CHUNK = b"x" * 65536
BIG = 40 * 1024 * 1024


async def upload(url: str, *, total: int, token: str | None, chunked: bool) -> int:
    """POST ``total`` bytes in 64 KiB pieces over a raw socket until the server answers; its status.
    Nothing is buffered here: the same chunk is written again and again."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = [
        b"POST /api/candles HTTP/1.1",
        f"Host: {parts.netloc}".encode(),
        b"Content-Type: application/json",
    ]
    if token is not None:
        head.append(f"Authorization: Bearer {token}".encode())
    head.append(b"Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}".encode())
    writer.write(b"\r\n".join(head) + b"\r\n\r\n")

    async def pump() -> None:
        sent = 0
        frame = (f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n") if chunked else CHUNK
        try:
            while sent < total:
                writer.write(frame)
                await writer.drain()
                sent += len(CHUNK)
        except OSError:
            pass  # the server answered and closed: the rest is not wanted

    pumping = asyncio.create_task(pump())
    try:
        status_line = await asyncio.wait_for(reader.readline(), 60)
    finally:
        pumping.cancel()
        await asyncio.gather(pumping, return_exceptions=True)
        writer.close()
        with contextlib.suppress(OSError):  # a reset connection: closed all the same
            await writer.wait_closed()
    return int(status_line.split()[1])


async def test_no_token_is_401_before_the_body_is_read_or_parsed(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        malformed = await anonymous.post(
            "/api/candles", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 401 and malformed.json()["code"] == "unauthorized"
        assert malformed.headers["www-authenticate"] == "Bearer"
        wrong = await anonymous.post(
            "/api/instruments/subscribe", json={"instruments": []}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401 and "bearer token" in wrong.json()["detail"]
    authorised = await api.client.post(
        "/api/candles", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert authorised.status_code == 422  # with the token, the body is parsed and refused


async def test_a_body_over_the_limit_is_413_declared_or_chunked(api: Api) -> None:
    limit = api.runtime.settings.API_MAX_BODY_BYTES
    assert limit == 1_000_000  # the default
    declared = await api.client.post(
        "/api/candles", content=b" " * (limit + 1), headers={"Content-Type": "application/json"}
    )
    assert declared.status_code == 413 and declared.json()["code"] == "body_too_large"
    assert str(limit) in declared.json()["detail"]
    assert await upload(api.url, total=2 * limit, token=API_TOKEN, chunked=True) == 413
    # just under the limit: read and parsed as usual
    padded = b'{"instruments": ["id:1"]}' + b" " * (limit - 100)
    ok = await api.client.post(
        "/api/instruments/unsubscribe", content=padded, headers={"Content-Type": "application/json"}
    )
    assert ok.status_code != 413, ok.text


async def test_four_40mb_uploads_cost_the_serving_process_less_than_5mb(
    db_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    """Measured on ``trading-helper serve`` in its own process: its peak resident size (VmHWM,
    reset just before) against its size before, over four parallel 40 MB uploads."""
    env = {
        "DATABASE_URL": db_dsn,
        "REDIS_URL": api_redis_url(redis_url),
        "BROKER": "sim",
        "API_TOKEN": API_TOKEN,
        "LOG_LEVEL": "WARNING",
    }
    async with serve_process(env, tmp_path) as served:
        async with httpx.AsyncClient(base_url=served.url) as client:
            assert (await client.get("/health/db")).status_code == 200
        for token, expected in ((None, 401), (API_TOKEN, 413)):
            for chunked in (True, False):
                await upload(served.url, total=len(CHUNK) * 32, token=token, chunked=chunked)  # warm up
                await asyncio.sleep(0.2)
                served.reset_peak()
                base_kb = served.status_kb("VmRSS")
                statuses = await asyncio.gather(
                    *(upload(served.url, total=BIG, token=token, chunked=chunked) for _ in range(4))
                )
                grown_kb = served.status_kb("VmHWM") - base_kb
                assert statuses == [expected] * 4, (token is None, chunked)
                print(f"4 x 40 MB, token: {token is not None}, chunked: {chunked}: +{grown_kb} kB peak RSS")
                # without a token nothing is read; with one, at most the limit per request
                bound_kb = 5 * 1024 if token is None else 5 * 1024 + 4 * 2 * 1000
                assert grown_kb < bound_kb, (
                    f"{grown_kb} kB for 4 x 40 MB (token: {token is not None}, chunked: {chunked})"
                )
