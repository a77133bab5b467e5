"""The chart page's test site: an API over a real database with two sessions of ticks (one
recent, one beyond the page's first 1m window), its live channel, and helpers to open the page
live (the ``site`` fixture is in tests/browser/conftest.py)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import redis.asyncio as aioredis
from fastapi import FastAPI

from tests.browser.driver import Browser
from trading_helper.models import Tick

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
API_TOKEN = "browser-test-token-0123456789"
SESSION = timedelta(hours=3)
OLD_SESSION_AGO = timedelta(days=3, hours=12)  # beyond the page's first 1m window (2 days)


@dataclass
class Site:
    url: str
    app: FastAPI
    redis: aioredis.Redis
    channel: str
    instrument_id: int
    last_close: float


def ticks(iid: int, start: datetime, end: datetime, base: float, seed: int) -> list[Tick]:
    """A seeded random walk every 15 s, priced in 0.05 steps, with busier and quieter moments."""
    rng = random.Random(seed)
    out, t, price, volume = [], start, base, 0
    while t <= end:
        price = max(1.0, round((price + rng.gauss(0, 0.9)) * 20) / 20)
        qty = int(rng.expovariate(1 / 40)) + 1
        volume += qty
        out.append(
            Tick(
                instrument_id=iid,
                exchange_ts=t,
                received_ts=t + timedelta(milliseconds=400),
                last_price=price,
                last_quantity=qty,
                volume=volume,
                bid_price=price - 0.05,
                ask_price=price + 0.05,
            )
        )
        t += timedelta(seconds=15)
    return out


def watched(site: Site) -> bool:
    return any(site.instrument_id in client.instruments for client in site.app.state.hub.clients)


async def until_watched(site: Site) -> None:
    """Until the page's WebSocket has subscribed the instrument (at most 5 s)."""
    for _ in range(100):
        if watched(site):
            return
        await asyncio.sleep(0.05)


async def open_live(browser: Browser, site: Site, tf: str) -> None:
    """The page on ``tf``, its candles read and its live feed following the instrument."""
    await browser.open(f"{site.url}/#token={API_TOKEN}&instrument={site.instrument_id}&tf={tf}")
    await browser.wait(
        "document.getElementById('chart').dataset.ready === 'true' && "
        "document.getElementById('status').dataset.ws === 'open'"
    )
    await until_watched(site)
