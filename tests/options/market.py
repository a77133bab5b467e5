"""A small NIFTY market for the option tests: instruments in the master and quotes in a Redis hash
of the test's own, priced by QuantLib's Black-76 on a known forward and smile (independent of the
code under test and of the simulator)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import asyncpg
import QuantLib as ql
import redis.asyncio as aioredis

from trading_helper.bench.options import nifty_chain
from trading_helper.ingest import codec
from trading_helper.models import Instrument, Tick
from trading_helper.options.expiry import years_to_expiry
from trading_helper.storage.instruments import sync_instruments

STEP = 50.0
RATE = 0.10


def smile(k: float, f: float) -> float:
    return 0.13 + 0.5 * math.log(k / f) ** 2 - 0.04 * math.log(k / f)


def ql_price(opt: str, f: float, k: float, t: float, sigma: float, rate: float = RATE) -> float:
    kind = ql.Option.Call if opt == "CE" else ql.Option.Put
    calc = ql.BlackCalculator(ql.PlainVanillaPayoff(kind, k), f, sigma * math.sqrt(t), math.exp(-rate * t))
    return float(calc.value())


def instruments(expiry: date, low: float = 22_000.0, high: float = 26_000.0) -> list[Instrument]:
    """The index, its options from ``low`` to ``high`` and a future of the next month."""
    out = nifty_chain(expiry, [low + STEP * i for i in range(int((high - low) / STEP) + 1)])
    out.append(
        Instrument(
            exchange="NFO",
            tradingsymbol=f"NIFTY{expiry:%y%b}FUT".upper(),
            name="NIFTY",
            segment="NFO-FUT",
            instrument_type="FUT",
            expiry=expiry + timedelta(days=21),
            lot_size=75,
            broker_ids={"sim": "799999"},
        )
    )
    return out


@dataclass
class Market:
    redis: aioredis.Redis
    key: str
    expiry: date
    ids: dict[str, int] = field(default_factory=dict)  # tradingsymbol -> id
    strikes: dict[int, tuple[float, str]] = field(default_factory=dict)  # id -> (strike, CE/PE)

    async def load(self, conn: asyncpg.Connection) -> None:
        await sync_instruments(conn, "sim", instruments(self.expiry))
        rows = await conn.fetch("SELECT id, tradingsymbol, strike, option_type FROM instruments")
        self.ids = {r["tradingsymbol"]: r["id"] for r in rows}
        self.strikes = {r["id"]: (r["strike"], r["option_type"]) for r in rows if r["option_type"]}

    @property
    def spot_id(self) -> int:
        return self.ids["NIFTY 50"]

    def option_ids(self) -> list[int]:
        return sorted(self.strikes)

    async def quote(
        self,
        as_of: datetime,
        forward: float,
        *,
        only: set[int] | None = None,
        oi_scale: float = 1.0,
        price_shift: float = 0.0,
    ) -> dict[int, Tick]:
        """Quotes of every option (or of ``only``) priced on ``forward``, the spot a little below."""
        t = years_to_expiry("NFO", self.expiry, as_of)
        ticks: dict[int, Tick] = {}
        spot = forward * math.exp(-RATE * t * 0.5)
        ticks[self.spot_id] = Tick(self.spot_id, as_of, as_of, spot)
        fut = self.ids[f"NIFTY{self.expiry:%y%b}FUT".upper()]
        ticks[fut] = Tick(fut, as_of, as_of, forward + price_shift, open_interest=int(9_000_000 * oi_scale))
        for iid, (k, opt) in self.strikes.items():
            if only is not None and iid not in only:
                continue
            p = ql_price(opt, forward, k, t, smile(k, forward)) + price_shift
            oi = int((1 + abs(k - forward) / 100) ** -1 * 1_000_000 * oi_scale) // 75 * 75
            ticks[iid] = Tick(
                iid,
                as_of,
                as_of,
                p,
                volume=int(oi / 3),
                open_interest=oi,
                bid_price=p - 0.0001,
                ask_price=p + 0.0001,
            )
        await self.redis.hset(self.key, mapping={str(i): codec.encode_quote(t) for i, t in ticks.items()})
        return ticks
