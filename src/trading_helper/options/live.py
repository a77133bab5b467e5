"""The chain from what is captured: contracts from the instrument master, prices from the latest
quotes in Redis (``th:quotes``, written by the ingest service), no broker call.

An underlying (an index or a stock; for MCX and CDS, where options are on futures, the future)
names its derivatives by the master's ``name``: Kite lists NIFTY 50's options and futures as
``NIFTY``, a stock's under its own symbol. Only contracts with a quote (ticks received) are in a
live chain: the subscribed strikes.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

import asyncpg
import redis.asyncio as aioredis

from trading_helper.errors import BufferUnavailable, UnknownInstrument
from trading_helper.ingest import codec, keys
from trading_helper.ingest.volume import from_us
from trading_helper.instruments.refs import ALIASES
from trading_helper.models import Instrument
from trading_helper.options.chain import Baseline, ChainInputs, FutureQuote, OptionQuote, compute_chain
from trading_helper.storage import sql_options

CONTRACTS_TTL_S: Final = 60.0
#: where an underlying's derivatives trade
DERIVATIVE_EXCHANGES: Final[dict[str, tuple[str, ...]]] = {"NSE": ("NFO",), "BSE": ("BFO",)}
#: index symbol (Kite, simulator, Fyers) -> the name its derivatives carry (NIFTY 50 -> NIFTY)
_DERIVATIVE_NAME: Final = {symbol: alias for alias, symbols in ALIASES.items() for symbol in symbols}


@dataclass(frozen=True, slots=True)
class Underlying:
    instrument: Instrument
    name: str  # the derivatives' name in the master
    exchanges: tuple[str, ...]  # the derivatives' exchanges

    @property
    def ref(self) -> str:
        return f"{self.instrument.exchange}:{self.instrument.tradingsymbol}"


@dataclass(frozen=True, slots=True)
class Contract:
    id: int
    exchange: str
    tradingsymbol: str
    strike: float
    option_type: str


def underlying_of(inst: Instrument) -> Underlying:
    """The derivatives' name and exchanges of an underlying."""
    if inst.instrument_type == "FUT" or inst.exchange in ("MCX", "CDS", "BCD"):
        return Underlying(inst, inst.name or inst.tradingsymbol, (inst.exchange,))
    name = _DERIVATIVE_NAME.get(inst.tradingsymbol, inst.tradingsymbol)
    return Underlying(inst, name, DERIVATIVE_EXCHANGES.get(inst.exchange, (inst.exchange,)))


async def contracts(conn: asyncpg.Connection | asyncpg.Pool, u: Underlying, expiry: date) -> list[Contract]:
    rows = await conn.fetch(sql_options.OPTION_CONTRACTS, u.name, list(u.exchanges), expiry)
    return [Contract(r["id"], r["exchange"], r["tradingsymbol"], r["strike"], r["option_type"]) for r in rows]


async def expiries(
    conn: asyncpg.Connection | asyncpg.Pool, u: Underlying, today: date
) -> list[dict[str, Any]]:
    rows = await conn.fetch(sql_options.EXPIRIES, u.name, list(u.exchanges), today)
    return [
        {
            "expiry": r["expiry"].isoformat(),
            "calls": r["calls"],
            "puts": r["puts"],
            "min_strike": r["min_strike"],
            "max_strike": r["max_strike"],
        }
        for r in rows
    ]


async def nearest_expiry(conn: asyncpg.Connection | asyncpg.Pool, u: Underlying, today: date) -> date:
    found = await expiries(conn, u, today)
    if not found:
        raise UnknownInstrument(
            f"{u.ref} has no option contracts expiring on or after {today}", code="no_options"
        )
    return date.fromisoformat(found[0]["expiry"])


@dataclass(frozen=True, slots=True)
class Future:
    id: int
    tradingsymbol: str


async def future_of(conn: asyncpg.Connection | asyncpg.Pool, u: Underlying, expiry: date) -> Future | None:
    """The chain's future: the underlying itself when it is one (MCX, CDS), else the first
    expiring on or after the options (``sql_options.FUTURE_FOR_EXPIRY``)."""
    if u.instrument.instrument_type == "FUT":
        assert u.instrument.id is not None
        return Future(u.instrument.id, u.instrument.tradingsymbol)
    row = await conn.fetchrow(sql_options.FUTURE_FOR_EXPIRY, u.name, list(u.exchanges), expiry)
    return None if row is None else Future(row["id"], row["tradingsymbol"])


@functools.lru_cache(maxsize=64)
def _fields(ids: tuple[int, ...]) -> list[bytes]:
    # a chain asks for the same 400 fields every time: as bytes, the client packs them as they are
    return [str(i).encode() for i in ids]


async def latest_records(
    redis: aioredis.Redis, ids: Sequence[int], key: str = keys.QUOTES
) -> dict[int, codec.Record]:
    """The latest quote's tick record of each instrument that has one (one HMGET; records, not
    :class:`Tick` objects: a 200-strike chain would otherwise build 1,200 datetimes it never reads)."""
    if not ids:
        return {}
    values = await redis.hmget(key, _fields(tuple(ids)))
    out: dict[int, codec.Record] = {}
    for iid, value in zip(ids, values, strict=True):
        if value is None:
            continue
        if not isinstance(value, bytes):
            raise BufferUnavailable("the Redis client must be created with decode_responses=False")
        out[iid] = codec.decode_quote_record(value)
    return out


def _price(value: float) -> float | None:
    return None if value != value else value  # NaN carries None


def _quantity(value: int) -> int | None:
    return None if value < 0 else value


def option_quote(c: Contract, rec: codec.Record) -> OptionQuote:
    """A contract and its latest quote's record (None where the quote lacks the field)."""
    _, _, _, ltp, _, volume, _, oi, bid, _, ask, _, _ = rec
    return OptionQuote(
        instrument_id=c.id,
        tradingsymbol=c.tradingsymbol,
        strike=c.strike,
        option_type=c.option_type,
        ltp=ltp,
        bid=_price(bid),
        ask=_price(ask),
        oi=_quantity(oi),
        volume=_quantity(volume),
    )


class ContractCache:
    """A chain's contracts and its future, and an underlying's nearest expiry, remembered
    ``ttl_s`` (the master changes once a day: the live chain need not read 400 contract rows
    and the expiries on every request); :meth:`clear` after an instrument sync."""

    def __init__(self, ttl_s: float = CONTRACTS_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._held: dict[tuple[int, date], tuple[float, list[Contract], Future | None]] = {}
        self._nearest: dict[tuple[int, date], tuple[float, date]] = {}

    def clear(self) -> None:
        self._held.clear()
        self._nearest.clear()

    async def get(
        self, conn: asyncpg.Connection | asyncpg.Pool, u: Underlying, expiry: date
    ) -> tuple[list[Contract], Future | None]:
        assert u.instrument.id is not None
        key = (u.instrument.id, expiry)
        hit = self._held.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1], hit[2]
        found, fut = await contracts(conn, u, expiry), await future_of(conn, u, expiry)
        if len(self._held) >= 256:
            self._held.clear()
        self._held[key] = (now, found, fut)
        return found, fut

    async def nearest_expiry(
        self, conn: asyncpg.Connection | asyncpg.Pool, u: Underlying, today: date
    ) -> date:
        """:func:`nearest_expiry`, remembered per underlying and day."""
        assert u.instrument.id is not None
        key = (u.instrument.id, today)
        hit = self._nearest.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        found = await nearest_expiry(conn, u, today)
        if len(self._nearest) >= 256:
            self._nearest.clear()
        self._nearest[key] = (now, found)
        return found


@dataclass(slots=True)
class LiveChain:
    """A chain as computed now, with what the recorder needs besides the document."""

    doc: dict[str, Any]
    contracts: list[Contract]
    #: the newest exchange time among the chain's quotes (None: no quote at all)
    latest: datetime | None


async def live_chain(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    u: Underlying,
    expiry: date,
    *,
    as_of: datetime,
    rate: float,
    baseline: Mapping[int, Baseline] | Awaitable[Mapping[int, Baseline]] | None = None,
    quotes_key: str = keys.QUOTES,
    cache: ContractCache | None = None,
) -> LiveChain:
    """The chain of ``u`` for ``expiry`` from the latest quotes; ``baseline`` (or a coroutine that
    reads it) gives the contracts' price and OI at the window's start."""
    found, fut = await (cache or ContractCache(0.0)).get(pool, u, expiry)
    assert u.instrument.id is not None
    ids = [c.id for c in found] + [u.instrument.id] + ([fut.id] if fut is not None else [])
    base: Mapping[int, Baseline] = {}
    if inspect.isawaitable(baseline):  # read beside the quotes: one round trip less
        recs, base = await asyncio.gather(latest_records(redis, ids, quotes_key), baseline)
    else:
        recs, base = await latest_records(redis, ids, quotes_key), baseline or {}
    spot = recs.get(u.instrument.id)
    future = recs.get(fut.id) if fut is not None else None
    exchange = found[0].exchange if found else u.exchanges[0]
    quoted = [(c, recs[c.id]) for c in found if c.id in recs]
    doc = compute_chain(
        ChainInputs(
            underlying=u.ref,
            exchange=exchange,
            expiry=expiry,
            as_of=as_of,
            rate=rate,
            quotes=[option_quote(c, rec) for c, rec in quoted],
            spot=None if spot is None else spot[3],  # a record's last price
            future_price=None if future is None else future[3],
            future=None
            if fut is None or future is None
            else FutureQuote(fut.id, fut.tradingsymbol, future[3], _quantity(future[7])),  # and OI
            baseline=base,
        )
    )
    latest = max((rec[0] for _, rec in quoted), default=None)  # a record's exchange time
    return LiveChain(doc, found, None if latest is None else from_us(latest))
