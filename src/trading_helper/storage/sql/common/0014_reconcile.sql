-- Version 14, both flavours: live candles reconciled with the broker's 1m history after a session
-- (trading_helper.reconcile), and reads that prefer the broker's candle where there is one.
--
-- A run per IST trading day and broker: how far it got (the job's progress) and how it ended.
CREATE TABLE reconcile_runs (
    day         date NOT NULL,
    broker      text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    instruments integer NOT NULL DEFAULT 0 CHECK (instruments >= 0),  -- to compare
    done        integer NOT NULL DEFAULT 0 CHECK (done >= 0),         -- compared (or failed) so far
    failed      integer NOT NULL DEFAULT 0 CHECK (failed >= 0),
    differences integer NOT NULL DEFAULT 0 CHECK (differences >= 0),
    PRIMARY KEY (day, broker)
);

-- Per instrument and day: what was compared. Only buckets wholly inside live coverage are compared
-- (elsewhere there is no live candle to hold against the broker's); `uncovered` counts the broker's
-- candles left out for that reason.
CREATE TABLE reconcile_instruments (
    day            date NOT NULL,
    instrument_id  integer NOT NULL REFERENCES instruments (id),
    broker         text NOT NULL,
    compared       integer NOT NULL,
    live_candles   integer NOT NULL,
    broker_candles integer NOT NULL,
    uncovered      integer NOT NULL,
    differences    integer NOT NULL,
    error          text,                         -- the fetch failed: nothing compared
    checked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, instrument_id)
);

-- One row per difference: a bucket only one side has (`live_missing`, `broker_missing`), or a
-- field that differs; `live` and `broker` hold the two values (NULL on the side that has none).
CREATE TABLE reconcile_differences (
    day           date NOT NULL,
    instrument_id integer NOT NULL REFERENCES instruments (id),
    bucket        timestamptz NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('live_missing', 'broker_missing', 'open', 'high', 'low',
                                                'close', 'volume', 'open_interest')),
    live          double precision,
    broker        double precision,
    PRIMARY KEY (day, instrument_id, bucket, kind)
);

-- The merged series preferring one source: 'live' is read_candles as it is; 'broker' takes the
-- broker's candle wherever broker_candles has one for the bucket (fetched for a gap or by a
-- reconciliation), read_candles' choice elsewhere.
CREATE FUNCTION read_candles(p_instrument integer, p_timeframe text, p_from timestamptz, p_to timestamptz,
                             p_prefer text)
RETURNS TABLE (bucket timestamptz, open double precision, high double precision, low double precision,
               close double precision, volume bigint, open_interest bigint, source text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_prefer = 'live' THEN
        RETURN QUERY SELECT * FROM read_candles(p_instrument, p_timeframe, p_from, p_to);
        RETURN;
    ELSIF p_prefer IS DISTINCT FROM 'broker' THEN
        RAISE EXCEPTION 'prefer must be live or broker, not %', p_prefer USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    SELECT m.* FROM (
        SELECT r.* FROM read_candles(p_instrument, p_timeframe, p_from, p_to) r
        WHERE NOT EXISTS (SELECT 1 FROM broker_candles b WHERE b.instrument_id = p_instrument
                          AND b.timeframe = p_timeframe AND b.bucket = r.bucket)
        UNION ALL
        SELECT b.bucket, b.open, b.high, b.low, b.close, b.volume, b.open_interest, 'broker'::text
        FROM broker_candles b
        WHERE b.instrument_id = p_instrument AND b.timeframe = p_timeframe
          AND b.bucket >= p_from AND b.bucket < p_to
    ) m
    ORDER BY m.bucket;
END $$;

COMMENT ON TABLE reconcile_runs IS 'Reconciliation runs (live vs broker 1m candles) per IST day and broker, with progress.';
COMMENT ON TABLE reconcile_instruments IS 'Per instrument and day: buckets compared with the broker and differences found.';
COMMENT ON TABLE reconcile_differences IS 'Live vs broker differences per instrument and 1m bucket.';
COMMENT ON FUNCTION read_candles(integer, text, timestamptz, timestamptz, text) IS
    'The merged candle series preferring live (as read_candles) or broker candles where there are any.';
