"""Small builders shared by storage tests."""

from __future__ import annotations

import asyncpg

from trading_helper.models import Instrument
from trading_helper.storage.instruments import lookup_tokens, sync_instruments


async def make_instruments(pool: asyncpg.Pool, count: int, *, prefix: str = "TEST") -> list[int]:
    """``count`` NSE instruments mapped for the ``sim`` broker; returns their ids in order."""
    items = [Instrument(exchange="NSE", tradingsymbol=f"{prefix}{n}", segment="NSE", instrument_type="EQ",
                        tick_size=0.05, broker_ids={"sim": f"{prefix}{n}"}) for n in range(count)]
    async with pool.acquire() as conn:
        await sync_instruments(conn, "sim", items, mark_expired=False)
        found = await lookup_tokens(conn, "sim", [f"{prefix}{n}" for n in range(count)])
    return [found[f"{prefix}{n}"] for n in range(count)]


async def reset_market_data(pool: asyncpg.Pool) -> None:
    """Empty ticks and candles and start the watermarks at now (plain PostgreSQL flavour)."""
    await pool.execute(
        "TRUNCATE tick_data, candle_invalidations, tick_volume_state, ingest_offsets, candles_1m_mat, "
        "candles_5m_mat, candles_15m_mat, candles_1h_mat, candles_1d_mat")
    await pool.execute(
        "UPDATE candle_watermarks SET watermark = date_bin(width, now(), '2000-01-03 00:15:00+05:30')")
