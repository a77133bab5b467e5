"""Small builders shared by storage tests."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from trading_helper.models import Instrument
from trading_helper.storage.catchup import catch_up
from trading_helper.storage.instruments import lookup_tokens, sync_instruments
from trading_helper.storage.migrate import current_flavour
from trading_helper.timeframes import Timeframe


async def make_instruments(pool: asyncpg.Pool, count: int, *, prefix: str = "TEST") -> list[int]:
    """``count`` NSE instruments mapped for the ``sim`` broker; returns their ids in order."""
    items = [
        Instrument(
            exchange="NSE",
            tradingsymbol=f"{prefix}{n}",
            segment="NSE",
            instrument_type="EQ",
            tick_size=0.05,
            broker_ids={"sim": f"{prefix}{n}"},
        )
        for n in range(count)
    ]
    async with pool.acquire() as conn:
        await sync_instruments(conn, "sim", items, mark_expired=False)
        found = await lookup_tokens(conn, "sim", [f"{prefix}{n}" for n in range(count)])
    return [found[f"{prefix}{n}"] for n in range(count)]


async def reset_market_data(pool: asyncpg.Pool) -> None:
    """Empty ticks and candles, on either flavour: plain PostgreSQL starts its watermarks at now;
    on TimescaleDB each aggregate is emptied (truncating the hypertable alone does not tell them)."""
    async with pool.acquire() as conn:
        flavour = await current_flavour(conn)
    if flavour == "postgres":
        await pool.execute(
            "TRUNCATE tick_data, quote_updates, candle_invalidations, tick_volume_state, tick_volume_log, ingest_offsets, "
            "ingest_sequences, tick_rejects, candles_1m_mat, candles_5m_mat, candles_15m_mat, candles_1h_mat, "
            "candles_1d_mat"
        )
        await pool.execute("UPDATE candle_watermarks SET watermark = th_bucket(width, now())")
        return
    await pool.execute(
        "TRUNCATE tick_data, quote_updates, tick_volume_state, tick_volume_log, ingest_offsets, ingest_sequences, tick_rejects"
    )
    for tf in Timeframe:
        await pool.execute(f"TRUNCATE {tf.relation}")  # names from the whitelist


async def refresh_all(pool: asyncpg.Pool) -> None:
    """Every candle level up to date now, on either flavour (what the service's catch-up does)."""
    async with pool.acquire() as conn:
        await catch_up(conn, await current_flavour(conn), fallback=None)


async def record_live_coverage(
    pool: asyncpg.Pool, instrument_id: int, start: datetime, end: datetime, *, broker: str = "sim"
) -> None:
    """A closed live-coverage range, as the ingest service leaves one: [start, end) was captured."""
    await pool.execute(
        "INSERT INTO live_coverage (instrument_id, broker, period, open) VALUES ($1, $2, tstzrange($3, $4), false)",
        instrument_id,
        broker,
        start,
        end,
    )
