"""The followed chains: subscribing N strikes each side of ATM, keeping them around ATM as it moves,
and a snapshot of each chain every ``OPTIONS_SNAPSHOT_INTERVAL_S`` (a long-lived task: run under
the supervisor by ``api/app.py``).

A chain is snapshotted only when one of its quotes changed since its last snapshot, so a closed
market adds no rows. Snapshots are stamped with their minute (``as_of`` on the interval's mark),
and a second write of the same mark keeps the first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol

import asyncpg
import redis.asyncio as aioredis

from trading_helper import clock
from trading_helper.errors import StorageError, UnknownInstrument
from trading_helper.ingest import keys
from trading_helper.options import history
from trading_helper.options.live import Contract, Underlying, contracts, future_of, live_chain, underlying_of
from trading_helper.storage import sql_instruments, sql_options
from trading_helper.storage.db import db_errors
from trading_helper.storage.instruments import get_instrument
from trading_helper.storage.sqlstate import DB_FAILURES
from trading_helper.storage.subscriptions import notify_changed
from trading_helper.timeframes import IST

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0


class Subscriber(Protocol):
    """What the recorder needs of the ingest service (``api.runtime.IngestControl`` has it)."""

    async def subscribe(self, instrument_ids: Sequence[int]) -> None: ...

    async def unsubscribe(self, instrument_ids: Sequence[int]) -> None: ...


def day_start(as_of: datetime) -> datetime:
    """Midnight IST of ``as_of``'s day: the default start of the OI change and build-up window."""
    ist = as_of.astimezone(IST)
    return ist.replace(hour=0, minute=0, second=0, microsecond=0)


def window(found: Sequence[Contract], atm: float | None, strikes: int) -> list[int]:
    """The contracts of the ``strikes`` strikes each side of ``atm`` (and ATM itself); around the
    middle strike when no ATM is known yet."""
    ladder = sorted({c.strike for c in found})
    if not ladder:
        return []
    centre = len(ladder) // 2 if atm is None else min(range(len(ladder)), key=lambda i: abs(ladder[i] - atm))
    chosen = set(ladder[max(0, centre - strikes) : centre + strikes + 1])
    return [c.id for c in found if c.strike in chosen]


@dataclass(slots=True)
class Follow:
    underlying_id: int
    expiry: date
    strikes: int
    subscribed: list[int]


#: a database away or refusing: the round of snapshots ends
_DB_AWAY: tuple[type[BaseException], ...] = (*DB_FAILURES, StorageError)


class OptionsRecorder:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        *,
        rate: float,
        interval_s: float,
        ingest: Subscriber | None = None,
        quotes_key: str = keys.QUOTES,
    ) -> None:
        self.pool, self.redis, self.rate, self.interval_s = pool, redis, rate, interval_s
        self.ingest, self.quotes_key = ingest, quotes_key
        #: per chain, the newest quote time of its last snapshot (unchanged: no new snapshot)
        self._last_seen: dict[tuple[int, date], datetime] = {}
        self._pruned_at = 0.0

    async def subscribe(self, u: Underlying, expiry: date, strikes: int, atm: float | None) -> list[int]:
        """Follow the chain: subscribe its window of strikes around ``atm`` (and the underlying
        and its future, for the spot and the fallback forward), persisted like any subscription."""
        assert u.instrument.id is not None
        found = await contracts(self.pool, u, expiry)
        ids = window(found, atm, strikes)
        if not ids:
            raise UnknownInstrument(f"{u.ref} has no option contracts expiring {expiry}", code="no_options")
        fut = await future_of(self.pool, u, expiry)
        extra = [u.instrument.id] + ([fut.id] if fut is not None else [])
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(sql_instruments.SUBSCRIBE, ids + extra)
            await conn.execute(sql_options.UPSERT_FOLLOW, u.instrument.id, expiry, strikes, ids)
            await notify_changed(conn, ids + extra)
            if self.ingest is not None:
                await self.ingest.subscribe(ids + extra)
        return ids

    async def follows(self, today: date) -> list[Follow]:
        rows = await self.pool.fetch(sql_options.LIST_FOLLOWS, today)
        return [Follow(r["underlying_id"], r["expiry"], r["strikes"], list(r["subscribed"])) for r in rows]

    async def snapshot_all(self, as_of: datetime) -> int:
        """Snapshot every followed chain whose quotes changed, and keep its strikes around ATM.
        Returns how many snapshots were written."""
        written = 0
        for f in await self.follows(as_of.astimezone(IST).date()):
            try:
                written += await self._snapshot(f, as_of)
            except _DB_AWAY:
                raise  # the database is away: the round ends (``run`` says so in one line)
            except Exception as exc:  # one broken chain must not stop the others' snapshots
                log.warning(
                    "option chain %s %s: snapshot failed: %s", f.underlying_id, f.expiry, exc, exc_info=True
                )
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
            await self.pool.execute(sql_options.PRUNE_SNAPSHOTS)
            self._pruned_at = time.monotonic()
        return written

    async def _snapshot(self, f: Follow, as_of: datetime) -> int:
        async with self.pool.acquire() as conn:
            u = underlying_of(await get_instrument(conn, f.underlying_id))
        _, base = await history.baseline(self.pool, f.underlying_id, f.expiry, day_start(as_of), as_of)
        chain = await live_chain(
            self.pool,
            self.redis,
            u,
            f.expiry,
            as_of=as_of,
            rate=self.rate,
            baseline=base,
            quotes_key=self.quotes_key,
        )
        await self._recentre(u, f, chain.contracts, chain.doc["atm_strike"] or chain.doc["spot"])
        key = (f.underlying_id, f.expiry)
        if chain.latest is None or self._last_seen.get(key) == chain.latest:
            return 0
        async with self.pool.acquire() as conn:
            await history.write_snapshot(conn, f.underlying_id, chain.doc)
        self._last_seen[key] = chain.latest
        return 1

    async def _recentre(self, u: Underlying, f: Follow, found: Sequence[Contract], atm: float | None) -> None:
        """Subscribe the strikes the ATM moved towards; unsubscribe this follow's contracts that
        fell more than twice its window away (the hysteresis keeps a jittering ATM from churning)."""
        if atm is None:
            return
        wanted = set(window(found, atm, f.strikes))
        keep = set(window(found, atm, 2 * f.strikes))
        current = set(f.subscribed)
        add = sorted(wanted - current)
        drop = sorted(current - keep)
        if not add and not drop:
            return
        subscribed = sorted((current - set(drop)) | wanted)
        async with self.pool.acquire() as conn, conn.transaction():
            if add:
                await conn.execute(sql_instruments.SUBSCRIBE, add)
            if drop:
                await conn.execute(sql_instruments.UNSUBSCRIBE, drop)
            await conn.execute(sql_options.SET_FOLLOW_SUBSCRIBED, f.underlying_id, f.expiry, subscribed)
            await notify_changed(conn, add + drop)
            if self.ingest is not None:
                if add:
                    await self.ingest.subscribe(add)
                if drop:
                    await self.ingest.unsubscribe(drop)
        f.subscribed = subscribed
        log.info("option chain %s %s re-centred on %s: +%d -%d", u.ref, f.expiry, atm, len(add), len(drop))

    async def run(self) -> None:
        """Snapshot on every interval mark until cancelled (the supervisor restarts it on error)."""
        while True:
            now = clock.now()
            step = timedelta(seconds=self.interval_s)
            mark = datetime.fromtimestamp((now.timestamp() // self.interval_s) * self.interval_s, IST) + step
            await asyncio.sleep(max(0.0, (mark - clock.now()).total_seconds()))
            with db_errors("option chain snapshots"):
                await self.snapshot_all(mark)
