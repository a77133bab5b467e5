-- Version 10, plain PostgreSQL: the rollup and its trigger bucket through th_bucket() (common/0010)
-- instead of their own copies of the bucket origin; candle_widen() is bucket_cover() (common/0002),
-- the one rule for "whole buckets covering these ranges". Bodies otherwise as in version 1.
--
-- The candles_* views keep date_bin(..., literal origin) of version 1: the read path plans them on
-- every read_candles() call, and the planner inlines an SQL function by parsing its body again at
-- each planning; over the stacked views (candles_1d reads 1h, 15m, 5m, 1m) that cost ~0.1-0.3 ms a
-- read (trading-helper bench query, p50). tests/unit/test_timeframes.py checks those literals.

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
