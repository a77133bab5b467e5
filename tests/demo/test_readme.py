"""The README's API examples, run as written (bash and curl) against `trading-helper demo`: the
instruments they name exist in the demo, the day they ask for is an NSE session in the past
(checked with pandas_market_calendars), and every command answers 2xx with what it promises."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pandas_market_calendars as mcal
import pytest

from tests.demo.process import demo_process
from trading_helper import clock
from trading_helper.timeframes import IST

README = Path(__file__).resolve().parents[2] / "README.md"
#: every curl fails on an HTTP error status and prints its body (the README's commands stay as written)
CURL = 'curl() { command curl --silent --show-error --fail-with-body --max-time 60 "$@"; echo; }'


def api_examples() -> tuple[str, list[str]]:
    """The README's API block: its first line (``T=...; H=...``) and each command (continuations joined)."""
    text = README.read_text()
    block = text[text.index("## API") :].split("```\n", 2)[1]
    lines = block.replace("\\\n", " ").splitlines()
    assert lines[0].startswith("T=...;"), lines[0]
    commands = [line for line in lines[1:] if line.strip() and not line.lstrip().startswith("#")]
    return lines[0], commands


def test_the_readme_asks_for_past_nse_sessions() -> None:
    _, commands = api_examples()
    days = {date.fromisoformat(d) for d in re.findall(r"\d{4}-\d{2}-\d{2}", " ".join(commands))}
    assert days, "the examples name no day"
    today = clock.now().astimezone(IST).date()
    sessions = mcal.get_calendar("NSE").schedule(min(days).isoformat(), max(days).isoformat()).index.date
    for day in days:
        assert day in set(sessions), f"{day} is not an NSE trading day"
        assert day < today, f"{day} is not in the past"


@pytest.fixture
async def demo(admin_dsn: str, redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[int, str]]:
    async with demo_process(admin_dsn, redis_url, tmp_path) as running:
        yield running


async def _bash(script: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode()


async def test_the_readme_api_examples_run_against_the_demo(demo: tuple[int, str]) -> None:
    port, token = demo
    first, commands = api_examples()
    prelude = f"set -euo pipefail\n{CURL}\n" + first.replace("T=...", f"T={token}", 1) + "\n"
    answers: dict[str, str] = {}
    for command in commands:
        run = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        for _ in range(60):  # a quote exists once the feed sent the instrument's first tick
            code, out = await _bash(prelude + run)
            if code == 0 or "/api/quotes/" not in command:
                break
            await asyncio.sleep(0.5)
        assert code == 0, f"{command}\n{out}"
        answers[command] = out
    by = {
        key: next(out for cmd, out in answers.items() if key in cmd)
        for key in (
            "instruments?q=NIFTY",
            "/sync",
            "/subscribe",
            "candles?instrument",
            "indicators?instrument",
            "instrument_token",
            "/api/quotes/",
            "/api/status",
            "/health",
            "/metrics",
        )
    }
    search = json.loads(by["instruments?q=NIFTY"])
    assert search["items"][0]["tradingsymbol"] == "NIFTY 50"
    assert json.loads(by["/sync"]) == {"broker": "sim", "count": 20}
    assert len(json.loads(by["/subscribe"])["subscribed"]) == 2
    five = json.loads(by["candles?instrument"])
    assert five["instrument"]["tradingsymbol"] == "RELIANCE" and len(five["candles"]) == 75  # 09:15-15:30
    studies = json.loads(by["indicators?instrument"])
    assert studies["time"] == [c["time"] for c in five["candles"]]
    assert [s["study"] for s in studies["studies"]] == ["ema:20", "rsi:14", "supertrend:10:3", "vwap"]
    assert studies["warmup_read"] == studies["warmup_bars"]  # the warm-up was backfilled too
    assert all(values[0] is not None for s in studies["studies"] for values in s["series"].values())
    fifteen = json.loads(by["instrument_token"])
    assert fifteen["instrument"]["tradingsymbol"] == "NIFTY 50" and len(fifteen["candles"]) == 25
    assert json.loads(by["/api/quotes/"])["last_price"] > 0
    assert json.loads(by["/api/status"])["broker"]["name"] == "sim"
    assert by["/health"].count('"healthy"') == 3
    assert "th_http_requests_total" in by["/metrics"]
