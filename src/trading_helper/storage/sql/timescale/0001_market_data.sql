-- Market data on TimescaleDB: raw ticks in a hypertable, five candle timeframes as stacked
-- continuous aggregates. The plain-PostgreSQL flavour (../postgres/) exposes the same relation
-- names and columns, so readers cannot tell the two apart.
--
-- Runs inside the migration runner's single transaction (common/0001 first, then this file), so
-- every statement here must be transaction-safe: aggregates are created WITH NO DATA and nothing
-- calls refresh_continuous_aggregate (which refuses to run in a transaction block). The refresh
-- policies below fill them once the background scheduler runs.
--
-- Why the time_bucket origin: every level uses the same origin, 2000-01-03 00:15 IST (a Monday).
-- Stacked aggregates must share one origin (TimescaleDB refuses a level whose origin differs from
-- the level below), and this one puts 1m/5m/15m on IST clock marks, 1h buckets at 09:15, 10:15 ...
-- IST as the brokers' own hourly candles, and 1d buckets from 00:15 IST to 00:15 IST: the whole
-- IST trading day (pre-open to MCX evening close) in one bucket, labelled 00:15 IST of its date.
-- A literal with an explicit offset keeps the definition independent of the session time zone.

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- ---------------------------------------------------------------------------------------------
-- Raw ticks
-- ---------------------------------------------------------------------------------------------
CREATE TABLE tick_data (
    time          timestamptz      NOT NULL,  -- exchange time; the writer keeps it unique per instrument
    instrument_id integer          NOT NULL,  -- instruments.id (broker-neutral)
    ltp           double precision NOT NULL,
    last_qty      integer,
    volume        bigint,                     -- cumulative day volume, as the broker sends it
    volume_delta  bigint           NOT NULL DEFAULT 0,  -- traded quantity of this tick (day reset handled)
    avg_price     double precision,
    open_interest bigint,
    bid_price     double precision,
    bid_qty       integer,
    ask_price     double precision,
    ask_qty       integer,
    received_at   timestamptz      NOT NULL
);

SELECT create_hypertable('tick_data', by_range('time', INTERVAL '1 day'));

CREATE INDEX tick_data_instrument_time_idx ON tick_data (instrument_id, time DESC);

-- Compressed per instrument in time order: the layout the candle refresh and per-instrument
-- reads scan.
ALTER TABLE tick_data SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'instrument_id',
    timescaledb.compress_orderby = 'time'
);

SELECT add_compression_policy('tick_data', compress_after => INTERVAL '1 day');

SELECT add_retention_policy('tick_data', drop_after => INTERVAL '7 days');

COMMENT ON TABLE tick_data IS
    'Raw ticks by exchange time. 1-day chunks, compressed after 1 day, dropped after 7 days. '
    'volume is the broker''s cumulative day volume; volume_delta the per-tick traded quantity '
    '(candle volume is its sum).';

-- ---------------------------------------------------------------------------------------------
-- 1-minute candles, straight from the ticks
-- ---------------------------------------------------------------------------------------------
-- materialized_only = false: real-time aggregation, so the forming candle is visible (the
-- default since TimescaleDB 2.13 is materialized-only). create_group_indexes = false: the one
-- index readers need is created explicitly below with a known name.
CREATE MATERIALIZED VIEW candles_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false,
      timescaledb.create_group_indexes = false) AS
SELECT time_bucket(INTERVAL '1 minute', time,
                   origin => TIMESTAMPTZ '2000-01-03 00:15:00+05:30') AS bucket,
       instrument_id,
       first(ltp, time)               AS open,
       max(ltp)                       AS high,
       min(ltp)                       AS low,
       last(ltp, time)                AS close,
       sum(volume_delta)::bigint      AS volume,
       last(open_interest, time)      AS open_interest,
       count(*)                       AS tick_count
FROM tick_data
GROUP BY 1, instrument_id
WITH NO DATA;

CREATE INDEX candles_1m_instrument_bucket_idx ON candles_1m (instrument_id, bucket DESC);

-- ---------------------------------------------------------------------------------------------
-- 5m, 15m, 1h, 1d: each level on the one below (hierarchical continuous aggregates)
-- ---------------------------------------------------------------------------------------------
CREATE MATERIALIZED VIEW candles_5m
WITH (timescaledb.continuous, timescaledb.materialized_only = false,
      timescaledb.create_group_indexes = false) AS
SELECT time_bucket(INTERVAL '5 minutes', bucket,
                   origin => TIMESTAMPTZ '2000-01-03 00:15:00+05:30') AS bucket,
       instrument_id,
       first(open, bucket)            AS open,
       max(high)                      AS high,
       min(low)                       AS low,
       last(close, bucket)            AS close,
       sum(volume)::bigint            AS volume,
       last(open_interest, bucket)    AS open_interest,
       sum(tick_count)::bigint        AS tick_count
FROM candles_1m
GROUP BY 1, instrument_id
WITH NO DATA;

CREATE INDEX candles_5m_instrument_bucket_idx ON candles_5m (instrument_id, bucket DESC);

CREATE MATERIALIZED VIEW candles_15m
WITH (timescaledb.continuous, timescaledb.materialized_only = false,
      timescaledb.create_group_indexes = false) AS
SELECT time_bucket(INTERVAL '15 minutes', bucket,
                   origin => TIMESTAMPTZ '2000-01-03 00:15:00+05:30') AS bucket,
       instrument_id,
       first(open, bucket)            AS open,
       max(high)                      AS high,
       min(low)                       AS low,
       last(close, bucket)            AS close,
       sum(volume)::bigint            AS volume,
       last(open_interest, bucket)    AS open_interest,
       sum(tick_count)::bigint        AS tick_count
FROM candles_5m
GROUP BY 1, instrument_id
WITH NO DATA;

CREATE INDEX candles_15m_instrument_bucket_idx ON candles_15m (instrument_id, bucket DESC);

CREATE MATERIALIZED VIEW candles_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false,
      timescaledb.create_group_indexes = false) AS
SELECT time_bucket(INTERVAL '1 hour', bucket,
                   origin => TIMESTAMPTZ '2000-01-03 00:15:00+05:30') AS bucket,
       instrument_id,
       first(open, bucket)            AS open,
       max(high)                      AS high,
       min(low)                       AS low,
       last(close, bucket)            AS close,
       sum(volume)::bigint            AS volume,
       last(open_interest, bucket)    AS open_interest,
       sum(tick_count)::bigint        AS tick_count
FROM candles_15m
GROUP BY 1, instrument_id
WITH NO DATA;

CREATE INDEX candles_1h_instrument_bucket_idx ON candles_1h (instrument_id, bucket DESC);

CREATE MATERIALIZED VIEW candles_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false,
      timescaledb.create_group_indexes = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket,
                   origin => TIMESTAMPTZ '2000-01-03 00:15:00+05:30') AS bucket,
       instrument_id,
       first(open, bucket)            AS open,
       max(high)                      AS high,
       min(low)                       AS low,
       last(close, bucket)            AS close,
       sum(volume)::bigint            AS volume,
       last(open_interest, bucket)    AS open_interest,
       sum(tick_count)::bigint        AS tick_count
FROM candles_1h
GROUP BY 1, instrument_id
WITH NO DATA;

CREATE INDEX candles_1d_instrument_bucket_idx ON candles_1d (instrument_id, bucket DESC);

-- ---------------------------------------------------------------------------------------------
-- Refresh policies
-- ---------------------------------------------------------------------------------------------
-- start_offset 6 days on every level: inside the 7-day raw retention, so a refresh never covers
-- ticks that were already dropped (that would delete the candles built from them), while late or
-- corrected ticks of the last 6 days are still folded in (refreshes follow invalidations, they do
-- not recompute the whole window). end_offset of one bucket leaves the forming bucket to
-- real-time aggregation. Every window is far above TimescaleDB's two-bucket minimum. At 1d the
-- whole-day end_offset also matters: before 2.25.2 TimescaleDB trims refresh windows to UTC days
-- ignoring the origin (timescaledb #9308; seen on 2.23), and a window ending inside an IST day
-- would materialise that still-forming day and move the watermark past it.
-- buckets_per_batch: a policy run materialises its window in batches, one transaction each; the
-- default changed between releases (1 bucket until 2.24, 10 after), so it is set here: an hour of
-- data per batch up to the 1h level, a day at 1d. It matters on the first run and after downtime,
-- when the whole 6 days are unmaterialised (8,640 one-minute batches at the old default).
SELECT add_continuous_aggregate_policy('candles_1m',
    start_offset => INTERVAL '6 days', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute', buckets_per_batch => 60);

SELECT add_continuous_aggregate_policy('candles_5m',
    start_offset => INTERVAL '6 days', end_offset => INTERVAL '5 minutes',
    schedule_interval => INTERVAL '5 minutes', buckets_per_batch => 12);

SELECT add_continuous_aggregate_policy('candles_15m',
    start_offset => INTERVAL '6 days', end_offset => INTERVAL '15 minutes',
    schedule_interval => INTERVAL '15 minutes', buckets_per_batch => 4);

SELECT add_continuous_aggregate_policy('candles_1h',
    start_offset => INTERVAL '6 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes', buckets_per_batch => 1);

SELECT add_continuous_aggregate_policy('candles_1d',
    start_offset => INTERVAL '6 days', end_offset => INTERVAL '1 day',
    schedule_interval => INTERVAL '1 hour', buckets_per_batch => 1);

-- ---------------------------------------------------------------------------------------------
-- Retention (the specification's table; 1d candles are kept forever)
-- ---------------------------------------------------------------------------------------------
SELECT add_retention_policy('candles_1m', drop_after => INTERVAL '30 days');
SELECT add_retention_policy('candles_5m', drop_after => INTERVAL '90 days');
SELECT add_retention_policy('candles_15m', drop_after => INTERVAL '6 months');
SELECT add_retention_policy('candles_1h', drop_after => INTERVAL '1 year');

-- A continuous aggregate is a view to PostgreSQL's COMMENT (COMMENT ON MATERIALIZED VIEW fails).
COMMENT ON VIEW candles_1m IS
    '1-minute OHLCV+OI candles from tick_data (IST clock marks). Real-time. Kept 30 days.';
COMMENT ON VIEW candles_5m IS
    '5-minute candles from candles_1m (IST clock marks). Real-time. Kept 90 days.';
COMMENT ON VIEW candles_15m IS
    '15-minute candles from candles_5m (:00/:15/:30/:45 IST). Real-time. Kept 6 months.';
COMMENT ON VIEW candles_1h IS
    '1-hour candles from candles_15m, starting 09:15 IST like the brokers'' hourly candles. '
    'Real-time. Kept 1 year.';
COMMENT ON VIEW candles_1d IS
    '1-day candles from candles_1h, 00:15 IST to 00:15 IST (bucket labelled 00:15 IST of the '
    'trading date). Real-time. Kept forever.';

-- ---------------------------------------------------------------------------------------------
-- The service's hooks, the same calls as on plain PostgreSQL
-- ---------------------------------------------------------------------------------------------
-- The service calls refresh_candles() on a timer in both flavours. Here it deliberately does
-- nothing: the refresh policies above materialise the candles and real-time aggregation shows
-- the forming one. (It could not call refresh_continuous_aggregate anyway when the caller holds
-- a transaction open.)
CREATE PROCEDURE refresh_candles()
LANGUAGE plpgsql
AS $$
BEGIN
    -- TimescaleDB: continuous aggregate policies refresh the candles; nothing to do.
    NULL;
END;
$$;

COMMENT ON PROCEDURE refresh_candles() IS
    'No-op on TimescaleDB: continuous aggregate refresh policies materialise candles. '
    'On plain PostgreSQL it rolls up new ticks into the candle tables.';

-- The tick writer calls this before a COPY on plain PostgreSQL (daily partitions). A hypertable
-- creates its chunks itself, so here it creates nothing and says so.
CREATE FUNCTION ensure_tick_partitions(p_from timestamptz, p_to timestamptz) RETURNS integer
LANGUAGE sql
AS $$ SELECT 0 $$;

COMMENT ON FUNCTION ensure_tick_partitions(timestamptz, timestamptz) IS
    'No-op on TimescaleDB (hypertable chunks are created on insert); returns 0.';

-- The specification's retention table, as on plain PostgreSQL. Here tick_data and the candle
-- aggregates are pruned by the retention policies above (the tests check the two agree); this
-- table drives the pruning of broker_candles, which no TimescaleDB policy covers.
CREATE TABLE retention_policy (
    relation text PRIMARY KEY,
    keep     interval              -- NULL: forever
);
INSERT INTO retention_policy VALUES
    ('tick_data', INTERVAL '7 days'), ('candles_1m', INTERVAL '30 days'),
    ('candles_5m', INTERVAL '90 days'), ('candles_15m', INTERVAL '6 months'),
    ('candles_1h', INTERVAL '1 year'), ('candles_1d', NULL);

-- Broker history follows the same table per timeframe. Ticks and candles are dropped by the
-- policies, so this drops no tick chunk and returns 0 like a plain-PostgreSQL run that dropped
-- no partition.
CREATE FUNCTION apply_retention(p_now timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM broker_candles b
    USING retention_policy r
    WHERE r.relation = 'candles_' || b.timeframe
      AND r.keep IS NOT NULL
      AND b.bucket < p_now - r.keep;
    RETURN 0;
END;
$$;

COMMENT ON FUNCTION apply_retention(timestamptz) IS
    'Prunes broker_candles by retention_policy; on TimescaleDB ticks and candles are pruned by '
    'retention policies. Run hourly by a TimescaleDB job (apply_retention_job).';

-- TimescaleDB's scheduler runs it, so the service need not.
CREATE PROCEDURE apply_retention_job(job_id integer, config jsonb)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM apply_retention();
END;
$$;

SELECT add_job('apply_retention_job', INTERVAL '1 hour');
