"""Minute snapshots of one option chain for the dashboard queries (the option chains dashboard):
written through the named statements of storage/sql_options.py, on PostgreSQL or the engine."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from trading_helper.storage import sql_options

#: the ``$expiry`` of the panel tests
OPTION_EXPIRY = date(2099, 1, 1)
STRIKES = (24_000.0, 24_050.0, 24_100.0)


def snapshots(underlying_id: int, end: datetime, minutes: int = 5) -> list[tuple[list[Any], list[list[Any]]]]:
    """(chain row, quote columns) per minute up to ``end``, in the statements' column order."""
    out = []
    for m in range(minutes, -1, -1):
        at = end - timedelta(minutes=m)
        chain = {
            "as_of": at,
            "underlying_id": underlying_id,
            "expiry": OPTION_EXPIRY,
            "spot": 24_010.0 + m,
            "forward": 24_033.0 + m,
            "forward_source": "parity",
            "rate": 0.1,
            "time_to_expiry_years": 0.5,
            "atm_strike": 24_050.0,
            "pcr_oi": 0.9 + m / 100,
            "pcr_volume": 1.1,
            "max_pain": 24_000.0,
            "atm_iv": 0.13 + m / 1000,
            "straddle": 320.0 - m,
            "future_id": None,
            "future_instrument": None,
            "future_ltp": None,
            "future_oi": None,
            "future_oi_change": None,
            "future_buildup": None,
        }
        rows = [(k, kind) for k in STRIKES for kind in ("CE", "PE")]
        quotes: dict[str, list[Any]] = {
            "as_of": [at] * len(rows),
            "underlying_id": [underlying_id] * len(rows),
            "expiry": [OPTION_EXPIRY] * len(rows),
            "instrument_id": list(range(1, len(rows) + 1)),
            "tradingsymbol": [f"X{int(k)}{kind}" for k, kind in rows],
            "strike": [k for k, _ in rows],
            "option_type": [kind for _, kind in rows],
            "ltp": [100.0] * len(rows),
            "bid": [99.9] * len(rows),
            "ask": [100.1] * len(rows),
            "iv_price": [100.0] * len(rows),
            "oi": [75_000 * (n + 1) + m for n in range(len(rows))],
            "oi_change": [m] * len(rows),
            "volume": [1000] * len(rows),
            "iv": [0.13] * len(rows),
            "iv_reason": [None] * len(rows),
            "delta": [0.5] * len(rows),
            "gamma": [0.001] * len(rows),
            "theta": [-10.0] * len(rows),
            "vega": [12.0] * len(rows),
            "buildup": ["long_buildup"] * len(rows),
        }
        out.append(
            ([chain[c] for c in sql_options.CHAIN_COLUMNS], [quotes[c] for c in sql_options.QUOTE_COLUMNS])
        )
    return out


async def write_snapshots(conn: asyncpg.Connection, underlying_id: int, end: datetime) -> None:
    await conn.execute(sql_options.ENSURE_PARTITIONS, end - timedelta(days=1), end)
    for chain, quotes in snapshots(underlying_id, end):
        await conn.execute(sql_options.INSERT_CHAIN_SNAPSHOT, *chain)
        await conn.execute(sql_options.INSERT_QUOTE_SNAPSHOTS, *quotes)


def _json(value: Any) -> Any:
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value.isoformat() if isinstance(value, date | datetime) else value


def engine_statements(underlying_id: int, end: datetime) -> list[tuple[str, list[Any]]]:
    """The same writes for the TimescaleDB engine (its parameters travel as JSON)."""
    out = []
    for chain, quotes in snapshots(underlying_id, end):
        out.append((sql_options.INSERT_CHAIN_SNAPSHOT, _json(chain)))
        out.append((sql_options.INSERT_QUOTE_SNAPSHOTS, _json(quotes)))
    return out
