-- Version 2, both flavours: exchange calendars, gap arithmetic and the one merged read path.
-- Uses only plain PostgreSQL (14+) features: multiranges, range_agg, date_bin. The candle
-- relations candles_1m .. candles_1d exist with the same columns on both flavours (version 1).
--
-- A candle series for an instrument is the union of three sources, per bucket:
--   live     the candle built from our ticks, when its bucket was fully captured (the bucket's
--            part inside a trading session lies inside live_coverage);
--   broker   else the broker's historical candle (broker_candles);
--   partial  else the live candle from an incompletely captured bucket (the forming candle,
--            or a minute around a reconnect that the broker has not given us yet).

-- ---------------------------------------------------------------------------------------------
-- Calendars
-- ---------------------------------------------------------------------------------------------
-- exchange (instruments.exchange) -> trading calendar. Exchanges not listed use 'NSE'.
CREATE TABLE market_calendars (
    exchange text PRIMARY KEY,
    calendar text NOT NULL
);
INSERT INTO market_calendars (exchange, calendar) VALUES
    ('NSE', 'NSE'), ('NFO', 'NSE'), ('BSE', 'BSE'), ('BFO', 'BSE'),
    ('CDS', 'CDS'), ('BCD', 'CDS'), ('MCX', 'MCX'), ('NCO', 'MCX');

-- Trading sessions per calendar and day, written by trading_helper.candles.calendar from a
-- maintained holiday calendar package (one row per session; Muhurat days have their evening one).
CREATE TABLE market_sessions (
    calendar text NOT NULL,
    day      date NOT NULL,
    session  tstzrange NOT NULL CHECK (NOT isempty(session)),
    PRIMARY KEY (calendar, day, session)
);
CREATE INDEX market_sessions_lower_idx ON market_sessions (calendar, lower(session));

-- Which years of which calendar are loaded, and from which package version: a newer package
-- (holidays announced later) reloads the year.
CREATE TABLE market_calendar_loads (
    calendar  text NOT NULL,
    year      integer NOT NULL,
    source    text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (calendar, year)
);

COMMENT ON TABLE market_calendars IS 'Exchange -> trading calendar used for gap detection (default NSE).';
COMMENT ON TABLE market_sessions IS 'Trading sessions per calendar and day (IST), from a holiday calendar package.';

-- ---------------------------------------------------------------------------------------------
-- Small helpers
-- ---------------------------------------------------------------------------------------------
-- The bucket width of a whitelisted timeframe; anything else is an error, never SQL text.
CREATE FUNCTION timeframe_width(p_timeframe text) RETURNS interval
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE p_timeframe
        WHEN '1m' THEN interval '1 minute' WHEN '5m' THEN interval '5 minutes'
        WHEN '15m' THEN interval '15 minutes' WHEN '1h' THEN interval '1 hour'
        WHEN '1d' THEN interval '1 day'
        ELSE NULL END;
END $$;

CREATE FUNCTION instrument_calendar(p_instrument integer) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT m.calendar FROM instruments i JOIN market_calendars m ON m.exchange = i.exchange
                     WHERE i.id = p_instrument), 'NSE')
$$;

-- Sessions of p_calendar overlapping p_window, clipped to it.
CREATE FUNCTION session_ranges(p_calendar text, p_window tstzrange) RETURNS tstzmultirange
LANGUAGE sql STABLE AS $$
    SELECT coalesce(range_agg(s.session), '{}'::tstzmultirange) * tstzmultirange(p_window)
    FROM market_sessions s
    WHERE s.calendar = p_calendar
      AND lower(s.session) < upper(p_window) AND lower(s.session) > lower(p_window) - interval '2 days'
      AND s.session && p_window
$$;

-- What was captured live for p_instrument, overlapping p_window (not clipped).
CREATE FUNCTION captured_ranges(p_instrument integer, p_window tstzrange) RETURNS tstzmultirange
LANGUAGE sql STABLE AS $$
    SELECT coalesce(range_agg(c.period), '{}'::tstzmultirange)
    FROM live_coverage c
    WHERE c.instrument_id = p_instrument AND lower(c.period) < upper(p_window) AND c.period && p_window
$$;

-- The smallest set of whole buckets (width p_width, the shared origin) covering p_ranges.
CREATE FUNCTION bucket_cover(p_ranges tstzmultirange, p_width interval) RETURNS tstzmultirange
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(range_agg(tstzrange(
               date_bin(p_width, lower(r), TIMESTAMPTZ '2000-01-03 00:15:00+05:30'),
               date_bin(p_width, upper(r) - interval '1 microsecond', TIMESTAMPTZ '2000-01-03 00:15:00+05:30')
                   + p_width)),
           '{}'::tstzmultirange)
    FROM unnest(p_ranges) AS r
$$;

-- ---------------------------------------------------------------------------------------------
-- Gaps: requested buckets, inside sessions, not captured live, not yet fetched
-- ---------------------------------------------------------------------------------------------
-- The bucket-aligned ranges of p_timeframe to fetch from the broker so that every bucket that
-- starts in [p_from, p_to) and ends by p_until is either captured live or fetched:
--     (buckets of the window ∩ trading sessions − live_coverage), widened to whole buckets,
--     − fetch_coverage of this timeframe (ranges the broker already answered, empty ones too).
-- p_until keeps the broker's not-yet-final last minutes out (the caller passes now - margin).
CREATE FUNCTION candle_gaps(p_instrument integer, p_timeframe text, p_from timestamptz,
                            p_to timestamptz, p_until timestamptz)
RETURNS SETOF tstzrange
LANGUAGE plpgsql STABLE AS $$
DECLARE
    origin constant timestamptz := '2000-01-03 00:15:00+05:30';
    w      interval := timeframe_width(p_timeframe);
    lo     timestamptz;
    hi     timestamptz;
    want   tstzmultirange;
BEGIN
    IF w IS NULL THEN
        RAISE EXCEPTION 'unknown timeframe %', p_timeframe USING ERRCODE = '22023';
    END IF;
    lo := date_bin(w, p_from - interval '1 microsecond', origin) + w;   -- first bucket start >= p_from
    hi := least(date_bin(w, p_to - interval '1 microsecond', origin) + w,  -- past the last bucket < p_to
                date_bin(w, p_until, origin));                            -- only buckets ended by p_until
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

COMMENT ON FUNCTION candle_gaps(integer, text, timestamptz, timestamptz, timestamptz) IS
    'Bucket-aligned ranges to backfill: window ∩ sessions − live_coverage, widened, − fetch_coverage.';

-- ---------------------------------------------------------------------------------------------
-- The read path
-- ---------------------------------------------------------------------------------------------
-- Live candles of one timeframe. Static statements per branch, so PL/pgSQL caches their plans;
-- the relation is chosen by the whitelist here, never from text.
CREATE FUNCTION live_candles(p_instrument integer, p_timeframe text, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (bucket timestamptz, open double precision, high double precision, low double precision,
               close double precision, volume bigint, open_interest bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_timeframe = '1m' THEN
        RETURN QUERY SELECT c.bucket, c.open, c.high, c.low, c.close, c.volume, c.open_interest
            FROM candles_1m c WHERE c.instrument_id = p_instrument AND c.bucket >= p_from AND c.bucket < p_to;
    ELSIF p_timeframe = '5m' THEN
        RETURN QUERY SELECT c.bucket, c.open, c.high, c.low, c.close, c.volume, c.open_interest
            FROM candles_5m c WHERE c.instrument_id = p_instrument AND c.bucket >= p_from AND c.bucket < p_to;
    ELSIF p_timeframe = '15m' THEN
        RETURN QUERY SELECT c.bucket, c.open, c.high, c.low, c.close, c.volume, c.open_interest
            FROM candles_15m c WHERE c.instrument_id = p_instrument AND c.bucket >= p_from AND c.bucket < p_to;
    ELSIF p_timeframe = '1h' THEN
        RETURN QUERY SELECT c.bucket, c.open, c.high, c.low, c.close, c.volume, c.open_interest
            FROM candles_1h c WHERE c.instrument_id = p_instrument AND c.bucket >= p_from AND c.bucket < p_to;
    ELSIF p_timeframe = '1d' THEN
        RETURN QUERY SELECT c.bucket, c.open, c.high, c.low, c.close, c.volume, c.open_interest
            FROM candles_1d c WHERE c.instrument_id = p_instrument AND c.bucket >= p_from AND c.bucket < p_to;
    ELSE
        RAISE EXCEPTION 'unknown timeframe %', p_timeframe USING ERRCODE = '22023';
    END IF;
END $$;

-- The merged series: one row per bucket in [p_from, p_to), ordered, with its source
-- ('live', 'broker' or 'partial'; see the top of this file).
CREATE FUNCTION read_candles(p_instrument integer, p_timeframe text, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (bucket timestamptz, open double precision, high double precision, low double precision,
               close double precision, volume bigint, open_interest bigint, source text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    w        interval := timeframe_width(p_timeframe);
    win      tstzrange;
    captured tstzmultirange;
    sessions tstzmultirange;
BEGIN
    IF w IS NULL THEN
        RAISE EXCEPTION 'unknown timeframe %', p_timeframe USING ERRCODE = '22023';
    END IF;
    IF p_from >= p_to THEN
        RETURN;
    END IF;
    win := tstzrange(p_from, p_to + w);   -- the last bucket may end after p_to
    captured := captured_ranges(p_instrument, win);
    sessions := session_ranges(instrument_calendar(p_instrument), win);
    RETURN QUERY
    WITH live AS (
        SELECT l.*, captured @> (tstzmultirange(tstzrange(l.bucket, l.bucket + w)) * sessions) AS complete
        FROM live_candles(p_instrument, p_timeframe, p_from, p_to) l
    ), hist AS (
        SELECT b.bucket, b.open, b.high, b.low, b.close, b.volume, b.open_interest
        FROM broker_candles b
        WHERE b.instrument_id = p_instrument AND b.timeframe = p_timeframe
          AND b.bucket >= p_from AND b.bucket < p_to
    )
    SELECT m.bucket, m.open, m.high, m.low, m.close, m.volume, m.open_interest, m.source
    FROM (
        SELECT l.bucket, l.open, l.high, l.low, l.close, l.volume, l.open_interest,
               CASE WHEN l.complete THEN 'live' ELSE 'partial' END AS source
        FROM live l
        WHERE l.complete OR NOT EXISTS (SELECT 1 FROM hist h WHERE h.bucket = l.bucket)
        UNION ALL
        SELECT h.bucket, h.open, h.high, h.low, h.close, h.volume, h.open_interest, 'broker'
        FROM hist h
        WHERE NOT EXISTS (SELECT 1 FROM live l WHERE l.bucket = h.bucket AND l.complete)
    ) m
    ORDER BY m.bucket;
END $$;

COMMENT ON FUNCTION read_candles(integer, text, timestamptz, timestamptz) IS
    'The merged candle series: live where the bucket was fully captured, else broker history, '
    'else the partial live candle; source says which. Used by the API, dashboards and chart page.';
