"""The market overview dashboard: one instrument's candles, OI and quote, and the whole market's
top movers and volume spikes.

``$timeframe`` is a fixed list (1m, 5m, 15m, 1h, 1d): the instrument's candles come from the
merged read path ``read_candles(instrument, timeframe, from, to)`` (which whitelists it), the
market-wide panels pick the candle relation with it (``FROM candles_$timeframe``), so a relation
name can only be one of the five. ``$instrument`` is an instruments.id. Every query runs as the
read-only ``grafana_reader`` role.
"""

from __future__ import annotations

from trading_helper.grafana.panels import Json, Panel, custom_variable, dashboard, query_variable
from trading_helper.timeframes import Timeframe

UID = "th-market-overview"
TIMEFRAMES = [tf.value for tf in Timeframe]

# Instruments captured live come first (the first is the default choice), then the rest.
INSTRUMENT_CHOICES = """
SELECT i.exchange || ':' || i.tradingsymbol AS __text, i.id AS __value
FROM instruments i
WHERE NOT i.expired
ORDER BY EXISTS (SELECT 1 FROM live_coverage c WHERE c.instrument_id = i.id) DESC,
         i.exchange, i.tradingsymbol
LIMIT 1000
"""

# The one merged read path (live candles where captured, else broker history, else partial):
# the same series as the API and the chart page. The timeframe is whitelisted by the function.
CANDLES = """
SELECT bucket AS time, open, high, low, close, volume
FROM read_candles($instrument, '$timeframe', $__timeFrom(), $__timeTo())
ORDER BY bucket
"""

OPEN_INTEREST = """
SELECT bucket AS time, open_interest AS "open interest"
FROM read_candles($instrument, '$timeframe', $__timeFrom(), $__timeTo())
WHERE open_interest IS NOT NULL
ORDER BY bucket
"""

# The newest update, trade or not (quote_updates holds the updates with no new trade), whatever
# the time range: the quote a trader would look at now. Each side reads one row through its
# (instrument, time) index; the newer by exchange time wins.
LATEST_QUOTE = """
SELECT time AS "exchange time", ltp AS "last price", bid_price AS bid, bid_qty AS "bid qty",
       ask_price AS ask, ask_qty AS "ask qty", ask_price - bid_price AS spread,
       volume AS "day volume", open_interest AS "open interest"
FROM (
    (SELECT coalesce(exchange_time, time) AS time, ltp, bid_price, bid_qty, ask_price, ask_qty, volume,
            open_interest
     FROM tick_data WHERE instrument_id = $instrument ORDER BY time DESC LIMIT 1)
    UNION ALL
    (SELECT time, ltp, bid_price, bid_qty, ask_price, ask_qty, volume, open_interest
     FROM quote_updates WHERE instrument_id = $instrument ORDER BY time DESC LIMIT 1)
) q
ORDER BY time DESC
LIMIT 1
"""

BID_ASK = """
SELECT $__timeGroupAlias(time, $__interval),
       avg(bid_price) AS bid, avg(ask_price) AS ask, avg(ltp) AS "last price"
FROM (
    SELECT coalesce(exchange_time, time) AS time, bid_price, ask_price, ltp FROM tick_data
    WHERE instrument_id = $instrument AND $__timeFilter(time)
    UNION ALL
    SELECT time, bid_price, ask_price, ltp FROM quote_updates
    WHERE instrument_id = $instrument AND $__timeFilter(time)
) u
GROUP BY 1
ORDER BY 1
"""

# The latest daily bucket up to the end of the range against the one before it (or, on an
# instrument's first day, against that day's open).
TOP_MOVERS = """
WITH day AS (
    SELECT max(bucket) AS bucket FROM candles_1d WHERE bucket <= $__timeTo()
), today AS (
    SELECT c.instrument_id, c.open, c.close, c.volume
    FROM candles_1d c JOIN day ON c.bucket = day.bucket
), previous AS (
    SELECT DISTINCT ON (c.instrument_id) c.instrument_id, c.close
    FROM candles_1d c JOIN day ON c.bucket < day.bucket AND c.bucket >= day.bucket - interval '10 days'
    ORDER BY c.instrument_id, c.bucket DESC
)
SELECT i.exchange, i.tradingsymbol AS symbol, t.close AS last,
       coalesce(p.close, t.open) AS reference,
       round((100 * (t.close / coalesce(p.close, t.open) - 1))::numeric, 2)::float8 AS "change %",
       t.volume
FROM today t
JOIN instruments i ON i.id = t.instrument_id
LEFT JOIN previous p ON p.instrument_id = t.instrument_id
ORDER BY abs(t.close / coalesce(p.close, t.open) - 1) DESC
LIMIT 20
"""

# Buckets among the newest ten whose volume is at least three times the average of the
# twenty before them, across all instruments. Bounded to the last 30 buckets of the range.
VOLUME_SPIKES = """
WITH recent AS (
    SELECT instrument_id, bucket, volume,
           avg(volume) OVER (PARTITION BY instrument_id ORDER BY bucket
                             ROWS BETWEEN 20 PRECEDING AND 1 PRECEDING) AS usual,
           row_number() OVER (PARTITION BY instrument_id ORDER BY bucket DESC) AS age
    FROM candles_$timeframe
    WHERE bucket > $__timeTo()::timestamptz - 30 * interval '$timeframe' AND bucket <= $__timeTo()
)
SELECT r.bucket AS "bucket", i.exchange, i.tradingsymbol AS symbol, r.volume,
       round(r.usual)::bigint AS "usual volume",
       round((r.volume / r.usual)::numeric, 1)::float8 AS "times usual"
FROM recent r JOIN instruments i ON i.id = r.instrument_id
WHERE r.age <= 10 AND r.usual > 0 AND r.volume >= 3 * r.usual
ORDER BY r.bucket DESC, r.volume / r.usual DESC
LIMIT 50
"""


def build() -> Json:
    panels = [
        Panel(
            "Candles ($timeframe)",
            "candlestick",
            CANDLES,
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
            OPEN_INTEREST,
            width=12,
            description="Open interest at the close of each bucket (F&O and MCX contracts).",
            unit="short",
        ),
        Panel(
            "Bid / ask / last",
            "timeseries",
            BID_ASK,
            width=12,
            description="Top of book from the ticks, averaged per display interval.",
        ),
        Panel(
            "Latest quote and top of book",
            "table",
            LATEST_QUOTE,
            width=24,
            height=5,
            description="The newest tick of the instrument, whatever the time range.",
        ),
        Panel(
            "Top movers of the day",
            "table",
            TOP_MOVERS,
            width=12,
            height=10,
            description="Latest daily candle against the previous day's close (or the day's open).",
        ),
        Panel(
            "Volume spikes ($timeframe)",
            "table",
            VOLUME_SPIKES,
            width=12,
            height=10,
            description="Recent buckets whose volume is at least 3x the average of the 20 before.",
        ),
    ]
    variables = [
        query_variable("instrument", "Instrument", INSTRUMENT_CHOICES),
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
