"""`trading-helper demo`, the README's first command, as a user runs it: embedded PostgreSQL,
simulated history and live ticks, the chart page, Ctrl-C, and a restart that keeps the data."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx

from tests.browser.driver import Browser
from tests.services import _free_port

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


async def _start(cwd: Path, port: int) -> tuple[asyncio.subprocess.Process, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "API_TOKEN")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trading_helper.cli", "demo", "--port", str(port), "--instruments", "20",
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    seen = []
    async with asyncio.timeout(150):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, "demo exited early:\n" + "".join(seen)
            seen.append(line)
            if match := re.search(r"#token=(\S+)", line):
                return proc, match.group(1)


async def _stop(proc: asyncio.subprocess.Process) -> str:
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    out = (await asyncio.wait_for(proc.stdout.read(), timeout=60)).decode()
    assert await proc.wait() == 0
    return out


async def test_demo_runs_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    port = _free_port()
    proc, token = await _start(tmp_path, port)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
            for _ in range(100):
                try:
                    page = await client.get("/")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.1)
            assert page.status_code == 200 and "Trading Helper" in page.text
            candles = (await client.get("/api/candles", params={"instrument": "id:1", "interval": "1m"})).json()
            assert candles["candles"], "no history was loaded"
            assert {c["source"] for c in candles["candles"]} >= {"broker"}
            for _ in range(100):
                status = (await client.get("/api/status")).json()
                if status["ingest"]["written"] > 0:
                    break
                await asyncio.sleep(0.1)
            assert status["ingest"]["written"] > 0 and status["ingest"]["feed_state"] == "connected"
            written_first = status["ingest"]["written"]
        # the chart page of the running demo in headless Chromium: candles render, live ticks move them
        async with Browser() as browser:
            await browser.open(f"http://127.0.0.1:{port}/#token={token}&instrument=1&tf=1m")
            await browser.wait("document.getElementById('chart').dataset.ready === 'true' && "
                               "Number(document.getElementById('chart').dataset.candles) > 100")
            before = await browser.chart()
            seen = int(before.get("ticks") or 0)
            await browser.wait(f"Number(document.getElementById('chart').dataset.ticks) >= {seen + 2}", timeout_s=30)
            after = await browser.chart()
            # every live tick adds its quantity to the last candle, or opens a new one
            assert (after["lastTime"], after["lastVolume"]) != (before["lastTime"], before["lastVolume"])
            await browser.screenshot(ARTIFACTS / "demo.png")
            assert await browser.errors() == []
    finally:
        out = await _stop(proc)
    assert "demo stopped" in out and "Traceback" not in out
    assert (tmp_path / "var" / "pgdata" / "PG_VERSION").is_file()

    proc, token_again = await _start(tmp_path, port)
    try:
        assert token_again == token  # kept in var/api_token: the browser's stored token still works
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
            for _ in range(100):
                try:
                    subs = (await client.get("/api/instruments/subscriptions")).json()
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.1)
            assert len(subs["items"]) == 20
    finally:
        await _stop(proc)
    assert written_first > 0
