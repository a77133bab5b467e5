"""What the API asks of option chains: expiries, the live chain or a past minute's, series, and
following a chain (``api/routes/options.py`` is its HTTP face, ``api/ws_options.py`` its live one)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from trading_helper import clock
from trading_helper.candles.service import EARLIEST, LATEST, CandleService, as_ist
from trading_helper.errors import BufferUnavailable, InvalidRange, UnknownInstrument
from trading_helper.ingest import keys
from trading_helper.options import history
from trading_helper.options.chain import Baseline
from trading_helper.options.live import (
    ContractCache,
    Underlying,
    expiries,
    live_chain,
    underlying_of,
)
from trading_helper.options.recorder import OptionsRecorder, day_start
from trading_helper.timeframes import IST


def _in_range(name: str, ts: datetime) -> datetime:
    ts = as_ist(ts)
    if not EARLIEST <= ts <= LATEST:
        raise InvalidRange(f"{name} must lie between {EARLIEST.date()} and {LATEST.date()}")
    return ts


class OptionsService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis | None,
        candles: CandleService,
        recorder: OptionsRecorder | None,
        *,
        rate: float,
        quotes_key: str = keys.QUOTES,
    ) -> None:
        self.pool, self.redis, self.candles, self.recorder = pool, redis, candles, recorder
        self.rate, self.quotes_key = rate, quotes_key
        #: the master's contracts and nearest expiries, and the baselines' snapshot rows: a live
        #: chain then reads only the quotes and the name of the window's first snapshot
        self.contracts = ContractCache()
        self.baselines: history.BaselineCache = {}

    def forget_instruments(self) -> None:
        """After an instrument sync: contracts and expiries afresh."""
        self.contracts.clear()

    def _redis(self) -> aioredis.Redis:
        if self.redis is None:
            raise BufferUnavailable("live option chains need Redis (REDIS_URL), which is not configured")
        return self.redis

    async def underlying(self, ref: str) -> Underlying:
        return underlying_of(await self.candles.resolve(ref))

    async def expiries(self, ref: str) -> dict[str, Any]:
        u = await self.underlying(ref)
        today = clock.now().astimezone(IST).date()
        return {"underlying": u.ref, "expiries": await expiries(self.pool, u, today)}

    async def _expiry(self, u: Underlying, expiry: date | None) -> date:
        return expiry or await self.contracts.nearest_expiry(self.pool, u, clock.now().astimezone(IST).date())

    async def chain(
        self, ref: str, expiry: date | None, at: datetime | None = None, window_min: int | None = None
    ) -> dict[str, Any]:
        """The chain now (from the latest quotes) or, with ``at``, the snapshot of that minute.
        OI change and build-up are measured from the first snapshot of the day (or of the last
        ``window_min`` minutes)."""
        u = await self.underlying(ref)
        exp = await self._expiry(u, expiry)
        assert u.instrument.id is not None
        if at is not None:
            doc = await history.read_snapshot(self.pool, u.ref, u.instrument.id, exp, _in_range("at", at))
            if doc is None:
                raise UnknownInstrument(
                    f"no snapshot of the {u.ref} {exp} chain at or before {as_ist(at).isoformat()}",
                    code="no_snapshot",
                )
            return doc
        now = clock.now()
        since = day_start(now) if window_min is None else now - timedelta(minutes=window_min)
        base = self._baseline(u.instrument.id, exp, since, now)
        chain = await live_chain(
            self.pool,
            self._redis(),
            u,
            exp,
            as_of=now,
            rate=self.rate,
            baseline=base,
            quotes_key=self.quotes_key,
            cache=self.contracts,
        )
        return chain.doc

    async def _baseline(
        self, underlying_id: int, expiry: date, since: datetime, until: datetime
    ) -> dict[int, Baseline]:
        return (await history.baseline(self.pool, underlying_id, expiry, since, until, self.baselines))[1]

    async def series(
        self,
        ref: str,
        expiry: date | None,
        metric: str,
        start: datetime | None,
        end: datetime | None,
        limit: int,
    ) -> dict[str, Any]:
        u = await self.underlying(ref)
        exp = await self._expiry(u, expiry)
        assert u.instrument.id is not None
        end = _in_range("to", end or clock.now())
        start = _in_range("from", start or day_start(end))
        if start >= end:
            raise InvalidRange(f"from ({start.isoformat()}) must be before to ({end.isoformat()})")
        points = await history.series(self.pool, u.instrument.id, exp, metric, start, end, limit)
        return {"underlying": u.ref, "expiry": exp.isoformat(), "metric": metric, "points": points}

    async def subscribe(self, ref: str, expiry: date | None, strikes: int) -> dict[str, Any]:
        if self.recorder is None:
            raise BufferUnavailable(
                "following option chains needs Redis (REDIS_URL), which is not configured"
            )
        u = await self.underlying(ref)
        exp = await self._expiry(u, expiry)
        assert u.instrument.id is not None
        # centred on the ATM of the quotes there are already (the forward's, else the spot's); on
        # the middle strike when none: the recorder re-centres it as soon as quotes arrive
        chain = await live_chain(
            self.pool, self._redis(), u, exp, as_of=clock.now(), rate=self.rate, quotes_key=self.quotes_key
        )
        ids = await self.recorder.subscribe(u, exp, strikes, chain.doc["atm_strike"])
        return {"underlying": u.ref, "expiry": exp.isoformat(), "strikes": strikes, "subscribed": ids}
