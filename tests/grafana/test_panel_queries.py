"""Every dashboard query, interpolated as Grafana does, runs as grafana_reader on simulated data and
returns what its panel type needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import asyncpg
import pytest

from tests.grafana.grafana_sql import QueryContext, interpolate
from tests.grafana.market_data import Market, fill_market
from tests.grafana.option_data import OPTION_EXPIRY
from tests.grafana.shapes import check_shape, panels
from trading_helper.grafana.build import DASHBOARDS
from trading_helper.grafana.market_overview import TIMEFRAMES
from trading_helper.timeframes import BUCKET_ORIGIN

# Panels that must show rows for the simulated market (the others may be empty by design,
# e.g. volume spikes on 1d with two days of data).
MUST_HAVE_ROWS = {"Volume spikes ($timeframe)": {"1m", "5m", "15m"}}


@pytest.fixture(scope="module")
async def market(db_pool: asyncpg.Pool) -> Market:
    return await fill_market(db_pool)


@pytest.fixture
async def reader(db_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection acting as the read-only Grafana role, so missing grants fail here too."""
    async with db_pool.acquire() as conn:
        await conn.execute("SET ROLE grafana_reader")
        try:
            yield conn
        finally:
            await conn.execute("RESET ROLE")


def context(market: Market, timeframe: str, *, interval: timedelta = timedelta(minutes=1)) -> QueryContext:
    return QueryContext(
        time_from=market.start - timedelta(minutes=5),
        time_to=market.end + timedelta(minutes=1),
        interval=interval,
        variables={
            "instrument": str(market.spiking_id),
            "timeframe": timeframe,
            "expiry": OPTION_EXPIRY.isoformat(),
        },
    )


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
async def test_every_panel_query_fits_its_panel(
    market: Market, reader: asyncpg.Connection, timeframe: str
) -> None:
    for dashboard, panel in panels():
        sql = interpolate(panel["targets"][0]["rawSql"], context(market, timeframe))
        assert "$" not in sql.replace("$$", ""), f"{dashboard}/{panel['title']}: uninterpolated: {sql}"
        rows = await reader.fetch(sql)
        check_shape(panel, rows)
        if panel["type"] == "table" and panel["title"] not in MUST_HAVE_ROWS:
            assert rows, f"{dashboard}/{panel['title']} ({timeframe}) returned nothing"
        if timeframe in MUST_HAVE_ROWS.get(panel["title"], set()):
            assert rows, f"{dashboard}/{panel['title']} ({timeframe}) returned nothing"


@pytest.mark.parametrize("interval", [timedelta(seconds=1), timedelta(minutes=5), timedelta(hours=1)])
async def test_time_grouped_panels_follow_the_display_interval(
    market: Market, reader: asyncpg.Connection, interval: timedelta
) -> None:
    for _, panel in panels():
        if "$__interval" in panel["targets"][0]["rawSql"]:
            rows = await reader.fetch(
                interpolate(panel["targets"][0]["rawSql"], context(market, "5m", interval=interval))
            )
            check_shape(panel, rows)
            stamps = [
                r["time"].timestamp() if isinstance(r["time"], datetime) else float(r["time"]) for r in rows
            ]
            # Grafana's $__timeGroup aligns to the epoch; our own series align to the IST origin
            width = interval.total_seconds()
            aligned = [
                all((s - origin) % width == 0 for s in stamps[1:])
                for origin in (0, BUCKET_ORIGIN.timestamp())
            ]
            assert any(aligned), panel["title"]


async def test_candles_are_the_merged_read_path(market: Market, reader: asyncpg.Connection) -> None:
    [candles] = [p for _, p in panels() if p["type"] == "candlestick"]
    ctx = context(market, "5m")
    for timeframe in TIMEFRAMES:
        rows = await reader.fetch(interpolate(candles["targets"][0]["rawSql"], context(market, timeframe)))
        expected = await reader.fetch(
            "SELECT bucket, open, high, low, close, volume FROM read_candles($1, $2, $3, $4)",
            market.spiking_id,
            timeframe,
            ctx.time_from,
            ctx.time_to,
        )
        assert [tuple(r) for r in rows] == [tuple(r) for r in expected] and rows, timeframe
    # and the live part of it is what the candle relation holds
    live = await reader.fetch(
        "SELECT bucket, open, high, low, close, volume FROM candles_5m "
        "WHERE instrument_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket",
        market.spiking_id,
        ctx.time_from,
        ctx.time_to,
    )
    rows = await reader.fetch(interpolate(candles["targets"][0]["rawSql"], ctx))
    assert [tuple(r) for r in rows] == [tuple(r) for r in live]


async def test_volume_spikes_find_the_spiking_instrument(market: Market, reader: asyncpg.Connection) -> None:
    [spikes] = [p for _, p in panels() if p["title"] == "Volume spikes ($timeframe)"]
    rows = await reader.fetch(interpolate(spikes["targets"][0]["rawSql"], context(market, "1m")))
    symbols = {r["symbol"] for r in rows}
    spiking = await reader.fetchval("SELECT tradingsymbol FROM instruments WHERE id = $1", market.spiking_id)
    assert symbols == {spiking}
    assert all(r["times usual"] >= 3 for r in rows)


async def test_top_movers_compare_with_the_previous_day(market: Market, reader: asyncpg.Connection) -> None:
    [movers] = [p for _, p in panels() if p["title"] == "Top movers of the day"]
    rows = await reader.fetch(interpolate(movers["targets"][0]["rawSql"], context(market, "1d")))
    assert len(rows) == len(market.instrument_ids)
    changes = [abs(r["change %"]) for r in rows]
    assert changes == sorted(changes, reverse=True)


async def test_broker_connection_shows_the_open_capture(market: Market, reader: asyncpg.Connection) -> None:
    [conn_panel] = [p for _, p in panels() if p["title"] == "Broker connection"]
    rows = await reader.fetch(interpolate(conn_panel["targets"][0]["rawSql"], context(market, "1m")))
    assert [(r["broker"], r["state"], r["instruments live"]) for r in rows] == [
        ("sim", "connected", len(market.instrument_ids))
    ]


async def test_instrument_variable_lists_captured_instruments_first(
    market: Market, reader: asyncpg.Connection
) -> None:
    [variable] = [
        v for v in DASHBOARDS["market_overview"]()["templating"]["list"] if v["name"] == "instrument"
    ]
    rows = await reader.fetch(variable["query"])
    assert list(rows[0].keys()) == ["__text", "__value"]
    assert {r["__value"] for r in rows[: len(market.instrument_ids)]} == set(market.instrument_ids)


async def test_the_reader_role_cannot_write_or_read_other_tables(
    market: Market, reader: asyncpg.Connection
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await reader.execute("DELETE FROM tick_data")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await reader.fetch("SELECT * FROM ingest_offsets")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await reader.execute("UPDATE instruments SET name = 'x'")
    assert await reader.fetchval("SELECT count(*) FROM tick_data") == market.ticks


async def test_latest_quote_includes_updates_with_no_new_trade(
    market: Market, db_pool: asyncpg.Pool, reader: asyncpg.Connection
) -> None:
    """A quote change after the last trade (stored in quote_updates, not tick_data) is what the
    latest-quote panel shows, and the late-ticks panel counts it (received "before" its exchange
    time here, which no simulated trade is)."""
    [panel] = [p for _, p in panels() if p["title"] == "Latest quote and top of book"]
    before = (await reader.fetch(interpolate(panel["targets"][0]["rawSql"], context(market, "1m"))))[0]
    later = before["exchange time"] + timedelta(seconds=5)
    async with db_pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO quote_updates (time, instrument_id, ltp, volume, bid_price, bid_qty, ask_price, ask_qty,"
            " received_at, trade_time) VALUES ($1, $2, $3, $4, 1.5, 7, 2.5, 9, $1::timestamptz - interval '1 second', $5)",
            later,
            market.spiking_id,
            before["last price"],
            before["day volume"],
            before["exchange time"],
        )
    try:
        row = (await reader.fetch(interpolate(panel["targets"][0]["rawSql"], context(market, "1m"))))[0]
        assert (row["exchange time"], row["bid"], row["ask"], row["last price"]) == (
            later,
            1.5,
            2.5,
            before["last price"],
        )
        [lag] = [p for _, p in panels() if p["title"] == "Late ticks"]
        ctx = context(market, "1m")
        ctx = QueryContext(
            time_from=ctx.time_from,
            time_to=later + timedelta(minutes=1),
            interval=ctx.interval,
            variables=ctx.variables,
        )
        rows = await reader.fetch(interpolate(lag["targets"][0]["rawSql"], ctx))
        assert sum(r["ticks from the future"] for r in rows) == 1
    finally:
        async with db_pool.acquire() as conn:
            await conn.execute("DELETE FROM quote_updates WHERE instrument_id = $1", market.spiking_id)
