-- Plain PostgreSQL (15+) flavour: the same relation names and columns as the TimescaleDB
-- flavour (tick_data, candles_1m .. candles_1d), built from portable parts:
--   * tick_data is range-partitioned by UTC day, so retention drops whole partitions;
--   * every insert into tick_data records the 1-minute buckets it touched (a statement
--     trigger over the transition table: one small aggregate per COPY batch);
--   * refresh_candles() rebuilds exactly those buckets level by level (1m from ticks, 5m from
--     1m, 15m from 5m, 1h from 15m, 1d from 1h) into candles_*_mat, then advances the
--     per-level watermark;
--   * the candles_* views return materialised rows below the watermark and aggregate the
--     rest on the fly, so the forming candle is visible (as with real-time aggregation).
-- Buckets share one origin, 2000-01-03 00:15 IST: IST clock marks, 1h from 09:15 IST,
-- 1d from 00:15 IST to 00:15 IST (the whole trading day).

CREATE TABLE tick_data (
    time          timestamptz NOT NULL,        -- exchange time, made unique per instrument
    instrument_id integer NOT NULL,
    ltp           double precision NOT NULL,
    last_qty      integer,
    volume        bigint,                      -- cumulative day volume as sent by the broker
    volume_delta  bigint NOT NULL DEFAULT 0,   -- per-tick traded quantity; candle volume sums it
    avg_price     double precision,
    open_interest bigint,
    bid_price     double precision,
    bid_qty       integer,
    ask_price     double precision,
    ask_qty       integer,
    received_at   timestamptz NOT NULL
) PARTITION BY RANGE (time);
CREATE INDEX tick_data_instrument_time_idx ON tick_data (instrument_id, time DESC);
CREATE INDEX tick_data_time_brin ON tick_data USING brin (time);

-- Creates the daily partitions covering [p_from, p_to]; the writer calls it before a COPY
-- whose ticks fall on a day it has not seen yet. Returns how many partitions it created.
CREATE FUNCTION ensure_tick_partitions(p_from timestamptz, p_to timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d        date := (p_from AT TIME ZONE 'UTC')::date;
    last_day date := (p_to AT TIME ZONE 'UTC')::date;
    part     text;
    created  integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('trading_helper.tick_partitions'));
    WHILE d <= last_day LOOP
        part := 'tick_data_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF tick_data FOR VALUES FROM (%L) TO (%L)',
                           part, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END $$;

-- 1-minute buckets whose candles must be rebuilt (filled by the trigger, drained by refresh).
CREATE TABLE candle_invalidations (bucket timestamptz NOT NULL);
CREATE INDEX candle_invalidations_bucket_idx ON candle_invalidations (bucket);

CREATE FUNCTION tick_data_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO candle_invalidations (bucket)
    SELECT DISTINCT date_bin('1 minute', time, '2000-01-03 00:15:00+05:30') FROM new_rows;
    RETURN NULL;
END $$;
CREATE TRIGGER tick_data_invalidate AFTER INSERT ON tick_data
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tick_data_invalidate();

-- Materialised candles, one table per level.
CREATE TABLE candles_1m_mat (
    bucket        timestamptz NOT NULL,
    instrument_id integer NOT NULL,
    open          double precision NOT NULL,
    high          double precision NOT NULL,
    low           double precision NOT NULL,
    close         double precision NOT NULL,
    volume        bigint NOT NULL,
    open_interest bigint,
    tick_count    bigint NOT NULL,
    PRIMARY KEY (instrument_id, bucket)
);
CREATE INDEX candles_1m_mat_bucket_idx ON candles_1m_mat (bucket);
CREATE TABLE candles_5m_mat (LIKE candles_1m_mat INCLUDING ALL);
CREATE TABLE candles_15m_mat (LIKE candles_1m_mat INCLUDING ALL);
CREATE TABLE candles_1h_mat (LIKE candles_1m_mat INCLUDING ALL);
CREATE TABLE candles_1d_mat (LIKE candles_1m_mat INCLUDING ALL);

-- Below its watermark a level reads its _mat table; at or above, it aggregates live.
CREATE TABLE candle_watermarks (
    level     text PRIMARY KEY,
    width     interval NOT NULL,
    parent    text,
    watermark timestamptz NOT NULL
);
INSERT INTO candle_watermarks (level, width, parent, watermark)
SELECT level, width, parent, date_bin(width, now(), '2000-01-03 00:15:00+05:30')
FROM (VALUES ('1m', interval '1 minute', NULL),
             ('5m', interval '5 minutes', '1m'),
             ('15m', interval '15 minutes', '5m'),
             ('1h', interval '1 hour', '15m'),
             ('1d', interval '1 day', '1h')) AS v(level, width, parent);

CREATE FUNCTION candle_watermark(p_level text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$ SELECT watermark FROM candle_watermarks WHERE level = p_level $$;

-- The bucket ranges of width p_width that cover every range of p_ranges.
CREATE FUNCTION candle_widen(p_ranges tstzmultirange, p_width interval) RETURNS tstzmultirange
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(range_agg(tstzrange(
               date_bin(p_width, lower(r), '2000-01-03 00:15:00+05:30'),
               date_bin(p_width, upper(r) - interval '1 microsecond', '2000-01-03 00:15:00+05:30') + p_width)),
           '{}'::tstzmultirange)
    FROM unnest(p_ranges) AS r
$$;

-- Rebuilds the buckets of one level inside p_ranges from the level below (or from ticks).
-- Table names come from candle_watermarks (constants), never from a caller.
CREATE FUNCTION candle_rebuild(p_level text, p_ranges tstzmultirange) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lvl candle_watermarks%ROWTYPE;
    r   tstzrange;
BEGIN
    SELECT * INTO STRICT lvl FROM candle_watermarks WHERE level = p_level;
    FOR r IN SELECT unnest(p_ranges) LOOP
        EXECUTE format('DELETE FROM %I WHERE bucket >= $1 AND bucket < $2', 'candles_' || p_level || '_mat')
            USING lower(r), upper(r);
        IF lvl.parent IS NULL THEN
            INSERT INTO candles_1m_mat
            SELECT date_bin('1 minute', time, '2000-01-03 00:15:00+05:30'), instrument_id,
                   (array_agg(ltp ORDER BY time))[1], max(ltp), min(ltp),
                   (array_agg(ltp ORDER BY time DESC))[1], sum(volume_delta)::bigint,
                   (array_agg(open_interest ORDER BY time DESC))[1], count(*)
            FROM tick_data
            WHERE time >= lower(r) AND time < upper(r)
            GROUP BY 1, 2;
        ELSE
            EXECUTE format(
                'INSERT INTO %I
                 SELECT date_bin($3, bucket, ''2000-01-03 00:15:00+05:30''), instrument_id,
                        (array_agg(open ORDER BY bucket))[1], max(high), min(low),
                        (array_agg(close ORDER BY bucket DESC))[1], sum(volume)::bigint,
                        (array_agg(open_interest ORDER BY bucket DESC))[1], sum(tick_count)::bigint
                 FROM %I WHERE bucket >= $1 AND bucket < $2 GROUP BY 1, 2',
                'candles_' || p_level || '_mat', 'candles_' || lvl.parent || '_mat')
                USING lower(r), upper(r), lvl.width;
        END IF;
    END LOOP;
END $$;

-- Incremental rollup: rebuilds the 1m buckets that received ticks (below the forming minute),
-- then each higher level's buckets that contain a rebuilt bucket or that the watermark passed.
-- Safe to call concurrently (serialised by an advisory lock) and as often as wanted.
CREATE PROCEDURE refresh_candles() LANGUAGE plpgsql AS $$
DECLARE
    origin  constant timestamptz := '2000-01-03 00:15:00+05:30';
    now_1m  timestamptz := date_bin('1 minute', clock_timestamp(), origin);
    changed tstzmultirange;
    lvl     candle_watermarks%ROWTYPE;
    new_wm  timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('trading_helper.refresh_candles'));
    WITH taken AS (DELETE FROM candle_invalidations WHERE bucket < now_1m RETURNING bucket)
    SELECT coalesce(range_agg(tstzrange(bucket, bucket + interval '1 minute')), '{}')
    INTO changed FROM taken;
    PERFORM candle_rebuild('1m', changed);
    UPDATE candle_watermarks SET watermark = greatest(watermark, now_1m) WHERE level = '1m';

    FOR lvl IN SELECT * FROM candle_watermarks WHERE parent IS NOT NULL ORDER BY width LOOP
        new_wm := greatest(lvl.watermark, date_bin(lvl.width, now_1m, origin));
        changed := candle_widen(changed, lvl.width) * tstzmultirange(tstzrange(NULL, new_wm));
        IF new_wm > lvl.watermark THEN
            changed := changed + tstzmultirange(tstzrange(lvl.watermark, new_wm));
        END IF;
        PERFORM candle_rebuild(lvl.level, changed);
        UPDATE candle_watermarks SET watermark = new_wm WHERE level = lvl.level;
    END LOOP;
END $$;

-- The candle relations readers use. Identical columns on both flavours.
CREATE VIEW candles_1m AS
SELECT bucket, instrument_id, open, high, low, close, volume, open_interest, tick_count
FROM candles_1m_mat WHERE bucket < candle_watermark('1m')
UNION ALL
SELECT date_bin('1 minute', time, '2000-01-03 00:15:00+05:30') AS bucket, instrument_id,
       (array_agg(ltp ORDER BY time))[1], max(ltp), min(ltp), (array_agg(ltp ORDER BY time DESC))[1],
       sum(volume_delta)::bigint, (array_agg(open_interest ORDER BY time DESC))[1], count(*)
FROM tick_data WHERE time >= candle_watermark('1m')
GROUP BY 1, 2;

CREATE VIEW candles_5m AS
SELECT bucket, instrument_id, open, high, low, close, volume, open_interest, tick_count
FROM candles_5m_mat WHERE bucket < candle_watermark('5m')
UNION ALL
SELECT date_bin('5 minutes', bucket, '2000-01-03 00:15:00+05:30'), instrument_id,
       (array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1],
       sum(volume)::bigint, (array_agg(open_interest ORDER BY bucket DESC))[1], sum(tick_count)::bigint
FROM candles_1m WHERE bucket >= candle_watermark('5m')
GROUP BY 1, 2;

CREATE VIEW candles_15m AS
SELECT bucket, instrument_id, open, high, low, close, volume, open_interest, tick_count
FROM candles_15m_mat WHERE bucket < candle_watermark('15m')
UNION ALL
SELECT date_bin('15 minutes', bucket, '2000-01-03 00:15:00+05:30'), instrument_id,
       (array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1],
       sum(volume)::bigint, (array_agg(open_interest ORDER BY bucket DESC))[1], sum(tick_count)::bigint
FROM candles_5m WHERE bucket >= candle_watermark('15m')
GROUP BY 1, 2;

CREATE VIEW candles_1h AS
SELECT bucket, instrument_id, open, high, low, close, volume, open_interest, tick_count
FROM candles_1h_mat WHERE bucket < candle_watermark('1h')
UNION ALL
SELECT date_bin('1 hour', bucket, '2000-01-03 00:15:00+05:30'), instrument_id,
       (array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1],
       sum(volume)::bigint, (array_agg(open_interest ORDER BY bucket DESC))[1], sum(tick_count)::bigint
FROM candles_15m WHERE bucket >= candle_watermark('1h')
GROUP BY 1, 2;

CREATE VIEW candles_1d AS
SELECT bucket, instrument_id, open, high, low, close, volume, open_interest, tick_count
FROM candles_1d_mat WHERE bucket < candle_watermark('1d')
UNION ALL
SELECT date_bin('1 day', bucket, '2000-01-03 00:15:00+05:30'), instrument_id,
       (array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1],
       sum(volume)::bigint, (array_agg(open_interest ORDER BY bucket DESC))[1], sum(tick_count)::bigint
FROM candles_1h WHERE bucket >= candle_watermark('1d')
GROUP BY 1, 2;

-- The specification's retention table: ticks 7 days, 1m 30 days, 5m 90 days, 15m 6 months,
-- 1h 1 year, 1d forever. Broker history follows the same table per timeframe. Raw ticks are
-- dropped by whole partitions; refresh only rebuilds buckets that received new ticks, so it
-- never recomputes a bucket whose ticks are gone.
CREATE TABLE retention_policy (
    relation  text PRIMARY KEY,
    keep      interval            -- NULL: forever
);
INSERT INTO retention_policy VALUES
    ('tick_data', interval '7 days'), ('candles_1m', interval '30 days'),
    ('candles_5m', interval '90 days'), ('candles_15m', interval '6 months'),
    ('candles_1h', interval '1 year'), ('candles_1d', NULL);

CREATE FUNCTION apply_retention(p_now timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    keep_ticks interval := (SELECT keep FROM retention_policy WHERE relation = 'tick_data');
    part    record;
    dropped integer := 0;
    pol     record;
BEGIN
    FOR part IN
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'tick_data'::regclass
    LOOP
        -- partition tick_data_YYYYMMDD holds that UTC day; drop it once all of it is too old
        IF (to_date(right(part.relname, 8), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'
           <= p_now - keep_ticks THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    FOR pol IN SELECT relation, keep FROM retention_policy
               WHERE relation LIKE 'candles_%' AND keep IS NOT NULL LOOP
        EXECUTE format('DELETE FROM %I WHERE bucket < $1', pol.relation || '_mat') USING p_now - pol.keep;
        DELETE FROM broker_candles
        WHERE timeframe = substr(pol.relation, 9) AND bucket < p_now - pol.keep;
    END LOOP;
    DELETE FROM candle_invalidations WHERE bucket < p_now - keep_ticks;
    RETURN dropped;
END $$;

-- Schedules the rollup and retention inside the database when pg_cron is installed;
-- otherwise the service's scheduler calls them (trading_helper.storage.maintenance).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        EXECUTE $cron$SELECT cron.schedule('trading-helper-refresh', '* * * * *', 'CALL refresh_candles()')$cron$;
        EXECUTE $cron$SELECT cron.schedule('trading-helper-retention', '17 * * * *', 'SELECT apply_retention()')$cron$;
    END IF;
END $$;

SELECT ensure_tick_partitions(now() - interval '1 day', now() + interval '1 day');

COMMENT ON TABLE tick_data IS 'Raw ticks, partitioned by UTC day; kept 7 days.';
COMMENT ON VIEW candles_1m IS '1-minute OHLCV+OI candles from tick_data (materialised + live). Kept 30 days.';
COMMENT ON VIEW candles_5m IS '5-minute candles from candles_1m. Kept 90 days.';
COMMENT ON VIEW candles_15m IS '15-minute candles from candles_5m. Kept 6 months.';
COMMENT ON VIEW candles_1h IS '1-hour candles from 09:15 IST, from candles_15m. Kept 1 year.';
COMMENT ON VIEW candles_1d IS '1-day candles (00:15 IST to 00:15 IST), from candles_1h. Kept forever.';
