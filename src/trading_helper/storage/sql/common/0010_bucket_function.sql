-- Version 10, both flavours: one bucketing function. Every bucket of every level starts at
-- th_bucket_origin() + k * width (2000-01-03 00:15 IST, trading_helper.timeframes.BUCKET_ORIGIN:
-- IST clock marks, 1h from 09:15 IST, 1d from 00:15 IST to 00:15 IST); functions written after
-- this version bucket through th_bucket() instead of repeating the origin, and the functions of
-- earlier versions that repeated it are redefined here to use it (bodies otherwise unchanged).
--
-- What keeps the literal, and why: the TimescaleDB continuous aggregates (timescale/0001) call
-- time_bucket(..., origin => TIMESTAMPTZ '...') in their definitions: TimescaleDB accepts only a
-- constant origin there, and redefining an aggregate would delete every candle it materialised.
-- The plain-PostgreSQL candle views keep theirs for read speed (postgres/0010 says why). The
-- migrations already applied are history and stay as they were. tests/unit/test_timeframes.py
-- checks that every literal left equals the Python source, and tests/candles/test_timeframe_sql.py
-- that th_bucket() buckets as Timeframe.bucket_start does, on both flavours.
--
-- Both are SQL functions marked IMMUTABLE, so the planner inlines them into the calling query
-- (th_bucket(w, ts) plans as date_bin(w, ts, <constant>)): no per-row call overhead.

CREATE FUNCTION th_bucket_origin() RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT TIMESTAMPTZ '2000-01-03 00:15:00+05:30' $$;

-- the origin written out rather than th_bucket_origin(): one function body for the planner to inline
CREATE FUNCTION th_bucket(p_width interval, p_ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT date_bin(p_width, p_ts, TIMESTAMPTZ '2000-01-03 00:15:00+05:30') $$;

COMMENT ON FUNCTION th_bucket_origin() IS 'The one bucket origin of every candle level: 2000-01-03 00:15 IST.';
COMMENT ON FUNCTION th_bucket(interval, timestamptz) IS
    'Start of the candle bucket of width p_width holding p_ts (the shared origin th_bucket_origin()).';

CREATE OR REPLACE FUNCTION bucket_cover(p_ranges tstzmultirange, p_width interval) RETURNS tstzmultirange
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(range_agg(tstzrange(
               th_bucket(p_width, lower(r)),
               th_bucket(p_width, upper(r) - interval '1 microsecond')
                   + p_width)),
           '{}'::tstzmultirange)
    FROM unnest(p_ranges) AS r
$$;

CREATE OR REPLACE FUNCTION candle_gaps(p_instrument integer, p_timeframe text, p_from timestamptz,
                            p_to timestamptz, p_until timestamptz)
RETURNS SETOF tstzrange
LANGUAGE plpgsql STABLE AS $$
DECLARE
    w      interval := timeframe_width(p_timeframe);
    lo     timestamptz;
    hi     timestamptz;
    want   tstzmultirange;
BEGIN
    IF w IS NULL THEN
        RAISE EXCEPTION 'unknown timeframe %', p_timeframe USING ERRCODE = '22023';
    END IF;
    lo := th_bucket(w, p_from - interval '1 microsecond') + w;   -- first bucket start >= p_from
    hi := least(th_bucket(w, p_to - interval '1 microsecond') + w,  -- past the last bucket < p_to
                th_bucket(w, p_until));                            -- only buckets ended by p_until
    IF lo >= hi THEN
        RETURN;
    END IF;
    want := session_ranges(instrument_calendar(p_instrument), tstzrange(lo, hi))
            - captured_ranges(p_instrument, tstzrange(lo, hi));
    want := bucket_cover(want, w) - (
        SELECT coalesce(range_agg(f.period), '{}'::tstzmultirange)
        FROM fetch_coverage f
        WHERE f.instrument_id = p_instrument AND f.timeframe = p_timeframe
          AND lower(f.period) < hi AND f.period && tstzrange(lo, hi));
    RETURN QUERY SELECT r FROM unnest(want) AS r ORDER BY lower(r);
END $$;
