"""The market overview dashboard: one instrument's candles, OI and quote, and the whole market's
top movers and volume spikes.

``$timeframe`` is a fixed list (1m, 5m, 15m, 1h, 1d): the instrument's candles come from the
merged read path ``read_candles(instrument, timeframe, from, to)`` (which whitelists it), the
market-wide panels pick the candle relation with it (``FROM candles_$timeframe``), so a relation
name can only be one of the five. ``$instrument`` is an instruments.id. Every query runs as the
read-only ``grafana_reader`` role; the queries are in ``storage/sql_dashboards.py``.
"""

from __future__ import annotations

from trading_helper.grafana.panels import Json, Panel, custom_variable, dashboard, query_variable
from trading_helper.storage import sql_dashboards as sql
from trading_helper.timeframes import Timeframe

UID = "th-market-overview"
TIMEFRAMES = [tf.value for tf in Timeframe]


def build() -> Json:
    panels = [
        Panel(
            "Candles ($timeframe)",
            "candlestick",
            sql.CANDLES,
            width=24,
            height=12,
            description="OHLC with volume from read_candles(): live candles where the bucket was captured, "
            "else broker history, else the partial live candle.",
            options={
                "mode": "candles+volume",
                "candleStyle": "candles",
                "colorStrategy": "open-close",
                "colors": {"up": "green", "down": "red"},
                "includeAllFields": False,
                "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            },
        ),
        Panel(
            "Open interest ($timeframe)",
            "timeseries",
            sql.OPEN_INTEREST,
            width=12,
            description="Open interest at the close of each bucket (F&O and MCX contracts).",
            unit="short",
        ),
        Panel(
            "Bid / ask / last",
            "timeseries",
            sql.BID_ASK,
            width=12,
            description="Top of book from the ticks, averaged per display interval.",
        ),
        Panel(
            "Latest quote and top of book",
            "table",
            sql.LATEST_QUOTE,
            width=24,
            height=5,
            description="The newest tick of the instrument, whatever the time range.",
        ),
        Panel(
            "Top movers of the day",
            "table",
            sql.TOP_MOVERS,
            width=12,
            height=10,
            description="Latest daily candle against the previous day's close (or the day's open).",
        ),
        Panel(
            "Volume spikes ($timeframe)",
            "table",
            sql.VOLUME_SPIKES,
            width=12,
            height=10,
            description="Recent buckets whose volume is at least 3x the average of the 20 before.",
        ),
    ]
    variables = [
        query_variable("instrument", "Instrument", sql.INSTRUMENT_CHOICES),
        custom_variable("timeframe", "Timeframe", TIMEFRAMES, "5m"),
    ]
    return dashboard(
        UID,
        "Trading Helper: market overview",
        panels,
        variables=variables,
        time_from="now-6h",
        refresh="10s",
        tags=["trading-helper", "market"],
        description="Candles, open interest, quotes, top movers and volume spikes.",
    )
