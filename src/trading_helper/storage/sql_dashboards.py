"""Named SQL of the Grafana dashboards (``grafana/market_overview.py``, ``grafana/system_health.py``,
``grafana/option_chains.py``):
one query per panel or variable, run by Grafana as the read-only ``grafana_reader`` role. Grafana
fills in its macros (``$__timeFilter``, ``$__timeGroupAlias`` ...) and the dashboard variables
(``$instrument``, an instruments.id; ``$timeframe``, one of the five) before PostgreSQL sees them."""

from __future__ import annotations

# -- market overview ------------------------------------------------------------------------------

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


# -- system health --------------------------------------------------------------------------------

LATE_AFTER_S = 3  # the worst delay seen in practice from Indian brokers is about 3 s

# Every update the feed delivered: trades (tick_data) and updates with no new trade
# (quote_updates), by the feed's exchange time (tick_data.time is the trade's time; exchange_time
# is NULL only on rows from before schema version 6).
UPDATES = """(
    SELECT coalesce(exchange_time, time) AS time, instrument_id, received_at FROM tick_data
    WHERE $__timeFilter(time)
    UNION ALL
    SELECT time, instrument_id, received_at FROM quote_updates
    WHERE $__timeFilter(time)
) u"""

INGEST_RATE = f"""
SELECT $__timeGroupAlias(received_at, $__interval),
       count(*) / ($__interval_ms / 1000.0) AS "ticks/s"
FROM {UPDATES}
GROUP BY 1
ORDER BY 1
"""

TICKS_LAST_MINUTE = """
SELECT count(*) AS "ticks in the last minute",
       count(DISTINCT instrument_id) AS "instruments ticking"
FROM (
    SELECT instrument_id FROM tick_data WHERE time > now() - interval '1 minute'
    UNION ALL
    SELECT instrument_id FROM quote_updates WHERE time > now() - interval '1 minute'
) u
"""

STREAM_LAG = f"""
SELECT $__timeGroupAlias(time, $__interval),
       avg(extract(epoch FROM received_at - time))::float8 AS "average lag",
       (percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - time)))::float8
           AS "p99 lag",
       max(extract(epoch FROM received_at - time))::float8 AS "max lag"
FROM {UPDATES}
GROUP BY 1
ORDER BY 1
"""

LATE_TICKS = f"""
SELECT $__timeGroupAlias(time, $__interval),
       count(*) FILTER (WHERE received_at - time > interval '{LATE_AFTER_S} seconds') AS "late ticks",
       count(*) FILTER (WHERE received_at < time) AS "ticks from the future"
FROM {UPDATES}
GROUP BY 1
ORDER BY 1
"""

# One row per broker: connected while an open period was extended in the last minute.
BROKER_CONNECTION = """
SELECT broker,
       CASE WHEN max(coalesce(upper(period), now())) FILTER (WHERE open) >= now() - interval '1 minute'
            THEN 'connected' ELSE 'disconnected' END AS state,
       count(DISTINCT instrument_id) FILTER (WHERE open) AS "instruments live",
       max(coalesce(upper(period), now())) AS "last confirmed",
       extract(epoch FROM now() - max(coalesce(upper(period), now())))::float8 AS "seconds since"
FROM live_coverage
GROUP BY broker
ORDER BY broker
"""

# How many instruments were being captured at each moment: a drop to zero is a disconnection.
CAPTURED_INSTRUMENTS = """
SELECT s.t AS time, count(DISTINCT c.instrument_id) AS "instruments captured"
FROM generate_series(th_bucket(greatest($__interval_ms, 60000) * interval '1 millisecond',
                               $__timeFrom()::timestamptz),
                     $__timeTo()::timestamptz,
                     greatest($__interval_ms, 60000) * interval '1 millisecond') AS s(t)
LEFT JOIN live_coverage c ON c.period @> s.t
GROUP BY s.t
ORDER BY s.t
"""


# One row per maintenance job (job_status, migration 7: TimescaleDB's policy jobs, or the
# service's own rollup/retention runs on plain PostgreSQL), judged by the same rule as the
# service's check (storage/jobs.py): failed last run, or no success within twice the schedule;
# on TimescaleDB one more row when no job scheduler runs for this database (then no policy runs).
_JOB_STATES = """
SELECT job, CASE WHEN NOT scheduled THEN 'paused'
                 WHEN last_run_failed THEN 'failed'
                 WHEN coalesce(last_success, last_start, '-infinity') < now() - 2 * schedule_interval
                 THEN 'overdue'
                 ELSE 'ok' END AS state,
       last_success, total_failures, last_error, last_error_at
FROM job_status
UNION ALL
SELECT 'job scheduler', 'stopped', NULL, NULL,
       'no TimescaleDB Background Worker Scheduler for this database', NULL
WHERE EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
  AND NOT EXISTS (SELECT 1 FROM pg_stat_activity
                  WHERE datname = current_database()
                    AND (backend_type = 'TimescaleDB Background Worker Scheduler'
                         OR application_name = 'TimescaleDB Background Worker Scheduler'))
"""

JOB_HEALTH = f"""
SELECT job, state, last_success AS "last success", total_failures AS "failed runs",
       last_error AS "last error", last_error_at AS "error at"
FROM ({_JOB_STATES}) AS jobs
ORDER BY state = 'ok', job
"""

JOB_PROBLEMS = f"""
SELECT count(*) FILTER (WHERE state <> 'ok') AS "jobs with a problem"
FROM ({_JOB_STATES}) AS jobs
"""


# -- option chains (minute snapshots of the followed chains; $instrument is the underlying) --------

OPTION_UNDERLYING_CHOICES = """
SELECT DISTINCT i.exchange || ':' || i.tradingsymbol AS __text, i.id AS __value
FROM option_chain_follows f JOIN instruments i ON i.id = f.underlying_id
ORDER BY 1
"""

OPTION_EXPIRY_CHOICES = """
SELECT expiry::text AS __text, expiry::text AS __value FROM option_chain_follows
WHERE underlying_id = $instrument ORDER BY expiry DESC
"""

_OPTION_CHAIN = "underlying_id = $instrument AND expiry = '$expiry'::date"

# the snapshot at (or last before) the end of the time range, one bar pair per strike
OPTION_OI_BY_STRIKE = f"""
SELECT strike::text AS strike,
       sum(oi) FILTER (WHERE option_type = 'CE') AS "CE OI",
       sum(oi) FILTER (WHERE option_type = 'PE') AS "PE OI"
FROM option_quote_snapshots
WHERE {_OPTION_CHAIN}
  AND as_of = (SELECT max(as_of) FROM option_chain_snapshots WHERE {_OPTION_CHAIN} AND as_of <= $__timeTo())
GROUP BY strike
ORDER BY strike
"""

OPTION_PCR = f"""
SELECT as_of AS time, pcr_oi AS "PCR (OI)", pcr_volume AS "PCR (volume)"
FROM option_chain_snapshots WHERE {_OPTION_CHAIN} AND $__timeFilter(as_of)
ORDER BY as_of
"""

OPTION_ATM_IV = f"""
SELECT as_of AS time, 100 * atm_iv AS "ATM IV"
FROM option_chain_snapshots WHERE {_OPTION_CHAIN} AND $__timeFilter(as_of)
ORDER BY as_of
"""

OPTION_STRADDLE = f"""
SELECT as_of AS time, straddle AS "ATM straddle"
FROM option_chain_snapshots WHERE {_OPTION_CHAIN} AND $__timeFilter(as_of)
ORDER BY as_of
"""

OPTION_MAX_PAIN = f"""
SELECT as_of AS time, max_pain AS "max pain", forward, spot
FROM option_chain_snapshots WHERE {_OPTION_CHAIN} AND $__timeFilter(as_of)
ORDER BY as_of
"""


# Alerts (migration 15): each trigger with its delivery attempts (the attempts' targets are not
# readable by grafana_reader: a webhook URL may carry a token).
ALERT_HISTORY = """
SELECT t.fired_at AS "fired", t.payload->>'name' AS "alert", t.payload->>'condition' AS "condition",
       t.observed_at AS "observed", (t.payload->>'left')::float8 AS "value",
       count(d.id) AS "attempts", coalesce(bool_or(d.ok), false) AS "delivered"
FROM alert_triggers t
LEFT JOIN alert_deliveries d ON d.trigger_id = t.id
WHERE $__timeFilter(t.fired_at)
GROUP BY t.id
ORDER BY t.fired_at DESC
LIMIT 200
"""
