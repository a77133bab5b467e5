-- Version 10, plain PostgreSQL: the rollup, its trigger and the candle views bucket through
-- th_bucket() (common/0010) instead of their own copies of the bucket origin; candle_widen() is
-- bucket_cover() (common/0002), the one rule for "whole buckets covering these ranges". Bodies
-- otherwise as in version 1; the views keep their columns, so CREATE OR REPLACE keeps their
-- dependants and grants.

CREATE OR REPLACE FUNCTION candle_widen(p_ranges tstzmultirange, p_width interval) RETURNS tstzmultirange
LANGUAGE sql IMMUTABLE AS $$ SELECT bucket_cover(p_ranges, p_width) $$;

CREATE OR REPLACE FUNCTION tick_data_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO candle_invalidations (bucket)
    SELECT DISTINCT th_bucket('1 minute', time) FROM new_rows;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION candle_rebuild(p_level text, p_ranges tstzmultirange) RETURNS void
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
            SELECT th_bucket('1 minute', time), instrument_id,
                   (array_agg(ltp ORDER BY time))[1], max(ltp), min(ltp),
                   (array_agg(ltp ORDER BY time DESC))[1], sum(volume_delta)::bigint,
                   (array_agg(open_interest ORDER BY time DESC))[1], count(*)
            FROM tick_data
            WHERE time >= lower(r) AND time < upper(r)
            GROUP BY 1, 2;
        ELSE
            EXECUTE format(
                'INSERT INTO %I
                 SELECT th_bucket($3, bucket), instrument_id,
                        (array_agg(open ORDER BY bucket))[1], max(high), min(low),
                        (array_agg(close ORDER BY bucket DESC))[1], sum(volume)::bigint,
                        (array_agg(open_interest ORDER BY bucket DESC))[1], sum(tick_count)::bigint
                 FROM %I WHERE bucket >= $1 AND bucket < $2 GROUP BY 1, 2',
                'candles_' || p_level || '_mat', 'candles_' || lvl.parent || '_mat')
                USING lower(r), upper(r), lvl.width;
        END IF;
    END LOOP;
END $$;

CREATE OR REPLACE PROCEDURE refresh_candles() LANGUAGE plpgsql AS $$
DECLARE
    now_1m  timestamptz := th_bucket('1 minute', clock_timestamp());
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
        new_wm := greatest(lvl.watermark, th_bucket(lvl.width, now_1m));
        changed := bucket_cover(changed, lvl.width) * tstzmultirange(tstzrange(NULL, new_wm));
        IF new_wm > lvl.watermark THEN
            changed := changed + tstzmultirange(tstzrange(lvl.watermark, new_wm));
        END IF;
        PERFORM candle_rebuild(lvl.level, changed);
        UPDATE candle_watermarks SET watermark = new_wm WHERE level = lvl.level;
    END LOOP;
END $$;

CREATE OR REPLACE VIEW candles_1m AS
SELECT bucket, instrument_id, open, high, low, close, volume, open_interest, tick_count
FROM candles_1m_mat WHERE bucket < candle_watermark('1m')
UNION ALL
SELECT th_bucket('1 minute', time) AS bucket, instrument_id,
       (array_agg(ltp ORDER BY time))[1], max(ltp), min(ltp), (array_agg(ltp ORDER BY time DESC))[1],
       sum(volume_delta)::bigint, (array_agg(open_interest ORDER BY time DESC))[1], count(*)
FROM tick_data WHERE time >= candle_watermark('1m')
GROUP BY 1, 2;

CREATE OR REPLACE VIEW candles_5m AS
SELECT bucket, instrument_id, open, high, low, close, volume, open_interest, tick_count
FROM candles_5m_mat WHERE bucket < candle_watermark('5m')
UNION ALL
SELECT th_bucket('5 minutes', bucket), instrument_id,
       (array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1],
       sum(volume)::bigint, (array_agg(open_interest ORDER BY bucket DESC))[1], sum(tick_count)::bigint
FROM candles_1m WHERE bucket >= candle_watermark('5m')
GROUP BY 1, 2;

CREATE OR REPLACE VIEW candles_15m AS
SELECT bucket, instrument_id, open, high, low, close, volume, open_interest, tick_count
FROM candles_15m_mat WHERE bucket < candle_watermark('15m')
UNION ALL
SELECT th_bucket('15 minutes', bucket), instrument_id,
       (array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1],
       sum(volume)::bigint, (array_agg(open_interest ORDER BY bucket DESC))[1], sum(tick_count)::bigint
FROM candles_5m WHERE bucket >= candle_watermark('15m')
GROUP BY 1, 2;

CREATE OR REPLACE VIEW candles_1h AS
SELECT bucket, instrument_id, open, high, low, close, volume, open_interest, tick_count
FROM candles_1h_mat WHERE bucket < candle_watermark('1h')
UNION ALL
SELECT th_bucket('1 hour', bucket), instrument_id,
       (array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1],
       sum(volume)::bigint, (array_agg(open_interest ORDER BY bucket DESC))[1], sum(tick_count)::bigint
FROM candles_15m WHERE bucket >= candle_watermark('1h')
GROUP BY 1, 2;

CREATE OR REPLACE VIEW candles_1d AS
SELECT bucket, instrument_id, open, high, low, close, volume, open_interest, tick_count
FROM candles_1d_mat WHERE bucket < candle_watermark('1d')
UNION ALL
SELECT th_bucket('1 day', bucket), instrument_id,
       (array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1],
       sum(volume)::bigint, (array_agg(open_interest ORDER BY bucket DESC))[1], sum(tick_count)::bigint
FROM candles_1h WHERE bucket >= candle_watermark('1d')
GROUP BY 1, 2;
