-- Version 13, both flavours: the permanent F&O archive.
--
-- Brokers stop serving an F&O contract's history once it expires, and the retention table would
-- delete what we recorded after 30 days (1m candles) and 7 days (ticks). So the 1m candles of
-- futures and options (instrument_type FUT, CE, PE) are copied into candle_archive once they are
-- final and kept forever, and, when asked, their ticks into tick_archive (the flavour files say
-- how it is stored). archive_policy holds what the settings chose (ARCHIVE_FO_CANDLES,
-- ARCHIVE_FO_TICKS; the service writes it at start); cash instruments follow the retention table.
--
-- When a candle is final: ticks older than 6 days are refused by the writer (models.MAX_TICK_AGE)
-- and raw ticks are dropped after 7, so a 1m bucket older than 7 days never changes again; it is
-- copied once (archive_progress remembers up to where), 23 days before its retention drops it.
-- Ticks are copied once older than 6 days, before the 7-day retention drops them.
--
-- The read path: live_candles() (common/0002) returns the archived candles, rolled up to the
-- asked timeframe, for the buckets its relation no longer has, so read_candles() gives the same
-- series before and after retention: expired contracts stay chartable and exportable.

CREATE TABLE archive_policy (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    candles    boolean NOT NULL DEFAULT true,            -- F&O 1m candles kept forever
    ticks      text NOT NULL DEFAULT 'drop'              -- F&O ticks: dropped at 7 days, kept
               CHECK (ticks IN ('drop', 'keep', 'parquet')),  -- forever, or exported to Parquet
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO archive_policy DEFAULT VALUES;

-- how far each copy has gone: every row of its kind older than `upto` is archived (or exported)
CREATE TABLE archive_progress (
    what text PRIMARY KEY CHECK (what IN ('candles', 'ticks', 'tick_files')),
    upto timestamptz NOT NULL
);

-- the one rule of what the archive keeps: futures and options (Kite's vocabulary, which the
-- Fyers adapter maps to as well)
CREATE FUNCTION is_fo_contract(p_instrument_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT p_instrument_type IN ('FUT', 'CE', 'PE') $$;

CREATE TABLE candle_archive (
    instrument_id integer NOT NULL REFERENCES instruments (id),
    bucket        timestamptz NOT NULL,
    open          double precision NOT NULL,
    high          double precision NOT NULL,
    low           double precision NOT NULL,
    close         double precision NOT NULL,
    volume        bigint NOT NULL,
    open_interest bigint,
    tick_count    bigint NOT NULL,
    PRIMARY KEY (instrument_id, bucket)
);

-- read_candles() reads the archive, and Grafana's read-only role reads candles through it
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader') THEN
        GRANT SELECT ON candle_archive TO grafana_reader;
    END IF;
END $$;

COMMENT ON TABLE archive_policy IS 'What the F&O archive keeps (settings ARCHIVE_FO_CANDLES, ARCHIVE_FO_TICKS).';
COMMENT ON TABLE candle_archive IS 'Final 1m candles of futures and options, kept forever (merged on read).';

-- Archived 1m candles of one instrument rolled up to buckets of p_width starting in [p_from, p_to)
-- (the rollup of the candle levels: first open, max high, min low, last close, summed volume).
CREATE FUNCTION archived_candles(p_instrument integer, p_width interval, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (bucket timestamptz, open double precision, high double precision, low double precision,
               close double precision, volume bigint, open_interest bigint)
LANGUAGE sql STABLE AS $$
    SELECT r.* FROM (
        SELECT th_bucket(p_width, a.bucket) AS bucket,
               (array_agg(a.open ORDER BY a.bucket))[1], max(a.high), min(a.low),
               (array_agg(a.close ORDER BY a.bucket DESC))[1], sum(a.volume)::bigint,
               (array_agg(a.open_interest ORDER BY a.bucket DESC))[1]
        FROM candle_archive a
        WHERE a.instrument_id = p_instrument AND a.bucket >= th_bucket(p_width, p_from) AND a.bucket < p_to
        GROUP BY 1
    ) r
    WHERE r.bucket >= p_from AND r.bucket < p_to
$$;

-- live_candles() of common/0002 with the archive merged: a bucket its relation still has wins
-- (it is the same candle while both exist), the archive fills the buckets retention dropped.
CREATE OR REPLACE FUNCTION live_candles(p_instrument integer, p_timeframe text, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (bucket timestamptz, open double precision, high double precision, low double precision,
               close double precision, volume bigint, open_interest bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_timeframe = '1m' THEN
        RETURN QUERY WITH l AS (SELECT c.bucket, c.open, c.high, c.low, c.close, c.volume, c.open_interest
            FROM candles_1m c WHERE c.instrument_id = p_instrument AND c.bucket >= p_from AND c.bucket < p_to)
            SELECT l.* FROM l UNION ALL
            SELECT a.* FROM archived_candles(p_instrument, interval '1 minute', p_from, p_to) a
            WHERE NOT EXISTS (SELECT 1 FROM l WHERE l.bucket = a.bucket);
    ELSIF p_timeframe = '5m' THEN
        RETURN QUERY WITH l AS (SELECT c.bucket, c.open, c.high, c.low, c.close, c.volume, c.open_interest
            FROM candles_5m c WHERE c.instrument_id = p_instrument AND c.bucket >= p_from AND c.bucket < p_to)
            SELECT l.* FROM l UNION ALL
            SELECT a.* FROM archived_candles(p_instrument, interval '5 minutes', p_from, p_to) a
            WHERE NOT EXISTS (SELECT 1 FROM l WHERE l.bucket = a.bucket);
    ELSIF p_timeframe = '15m' THEN
        RETURN QUERY WITH l AS (SELECT c.bucket, c.open, c.high, c.low, c.close, c.volume, c.open_interest
            FROM candles_15m c WHERE c.instrument_id = p_instrument AND c.bucket >= p_from AND c.bucket < p_to)
            SELECT l.* FROM l UNION ALL
            SELECT a.* FROM archived_candles(p_instrument, interval '15 minutes', p_from, p_to) a
            WHERE NOT EXISTS (SELECT 1 FROM l WHERE l.bucket = a.bucket);
    ELSIF p_timeframe = '1h' THEN
        RETURN QUERY WITH l AS (SELECT c.bucket, c.open, c.high, c.low, c.close, c.volume, c.open_interest
            FROM candles_1h c WHERE c.instrument_id = p_instrument AND c.bucket >= p_from AND c.bucket < p_to)
            SELECT l.* FROM l UNION ALL
            SELECT a.* FROM archived_candles(p_instrument, interval '1 hour', p_from, p_to) a
            WHERE NOT EXISTS (SELECT 1 FROM l WHERE l.bucket = a.bucket);
    ELSIF p_timeframe = '1d' THEN
        RETURN QUERY WITH l AS (SELECT c.bucket, c.open, c.high, c.low, c.close, c.volume, c.open_interest
            FROM candles_1d c WHERE c.instrument_id = p_instrument AND c.bucket >= p_from AND c.bucket < p_to)
            SELECT l.* FROM l UNION ALL
            SELECT a.* FROM archived_candles(p_instrument, interval '1 day', p_from, p_to) a
            WHERE NOT EXISTS (SELECT 1 FROM l WHERE l.bucket = a.bucket);
    ELSE
        RAISE EXCEPTION 'unknown timeframe %', p_timeframe USING ERRCODE = '22023';
    END IF;
END $$;

-- Copies what became final since the last run (see the top of this file); returns the rows copied.
-- tick_archive is the flavour's (postgres/0016, timescale/0016).
CREATE FUNCTION archive_market_data(p_now timestamptz DEFAULT now()) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    pol    archive_policy%ROWTYPE;
    lo     timestamptz;
    hi     timestamptz;
    copied bigint := 0;
    n      bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('trading_helper.archive'));
    SELECT * INTO STRICT pol FROM archive_policy;
    IF pol.candles THEN
        lo := coalesce((SELECT upto FROM archive_progress WHERE what = 'candles'), '-infinity');
        hi := th_bucket('1 minute', p_now - interval '7 days');
        IF hi > lo THEN
            INSERT INTO candle_archive (instrument_id, bucket, open, high, low, close, volume, open_interest, tick_count)
            SELECT c.instrument_id, c.bucket, c.open, c.high, c.low, c.close, c.volume, c.open_interest, c.tick_count
            FROM candles_1m c JOIN instruments i ON i.id = c.instrument_id
            WHERE is_fo_contract(i.instrument_type) AND c.bucket >= lo AND c.bucket < hi
            ON CONFLICT (instrument_id, bucket) DO UPDATE
            SET open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
                volume = excluded.volume, open_interest = excluded.open_interest, tick_count = excluded.tick_count;
            GET DIAGNOSTICS n = ROW_COUNT;
            copied := copied + n;
            INSERT INTO archive_progress (what, upto) VALUES ('candles', hi)
            ON CONFLICT (what) DO UPDATE SET upto = excluded.upto;
        END IF;
    END IF;
    IF pol.ticks = 'keep' THEN
        lo := coalesce((SELECT upto FROM archive_progress WHERE what = 'ticks'), '-infinity');
        hi := p_now - interval '6 days';
        IF hi > lo THEN
            INSERT INTO tick_archive
            SELECT t.* FROM tick_data t JOIN instruments i ON i.id = t.instrument_id
            WHERE is_fo_contract(i.instrument_type) AND t.time >= lo AND t.time < hi;
            GET DIAGNOSTICS n = ROW_COUNT;
            copied := copied + n;
            INSERT INTO archive_progress (what, upto) VALUES ('ticks', hi)
            ON CONFLICT (what) DO UPDATE SET upto = excluded.upto;
        END IF;
    END IF;
    RETURN copied;
END $$;

-- Broker history of archived contracts stays too: their 1m broker candles (and the record that
-- they were fetched) are exempt from the retention table while the archive keeps candles. Body
-- otherwise as in common/0004.
CREATE OR REPLACE FUNCTION prune_broker_history(p_now timestamptz DEFAULT now()) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    pol     record;
    horizon timestamptz;
    keep_fo boolean := (SELECT candles FROM archive_policy);
BEGIN
    FOR pol IN SELECT substr(relation, 9) AS timeframe, keep FROM retention_policy
               WHERE relation LIKE 'candles_%' AND keep IS NOT NULL LOOP
        horizon := p_now - pol.keep;
        DELETE FROM broker_candles b WHERE b.timeframe = pol.timeframe AND b.bucket < horizon
            AND NOT (keep_fo AND pol.timeframe = '1m'
                     AND is_fo_contract((SELECT i.instrument_type FROM instruments i WHERE i.id = b.instrument_id)));
        DELETE FROM fetch_coverage f WHERE f.timeframe = pol.timeframe AND upper(f.period) <= horizon
            AND NOT (keep_fo AND pol.timeframe = '1m'
                     AND is_fo_contract((SELECT i.instrument_type FROM instruments i WHERE i.id = f.instrument_id)));
        UPDATE fetch_coverage f SET period = tstzrange(horizon, upper(f.period))
        WHERE f.timeframe = pol.timeframe AND lower(f.period) < horizon AND upper(f.period) > horizon
            AND NOT (keep_fo AND pol.timeframe = '1m'
                     AND is_fo_contract((SELECT i.instrument_type FROM instruments i WHERE i.id = f.instrument_id)));
    END LOOP;
END $$;

-- apply_retention() archives first: the flavour's retention (version 6 on plain PostgreSQL,
-- version 4 on TimescaleDB) keeps its body under a new name, and the one name every scheduler
-- calls (the service, pg_cron, TimescaleDB's apply_retention_job) now runs both in order.
ALTER FUNCTION apply_retention(timestamptz) RENAME TO drop_retained_market_data;

CREATE FUNCTION apply_retention(p_now timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM archive_market_data(p_now);
    RETURN drop_retained_market_data(p_now);
END $$;

COMMENT ON FUNCTION apply_retention(timestamptz) IS
    'archive_market_data() (the F&O archive), then the retention table (drop_retained_market_data()).';

-- Where an instrument's ticks in tick_archive end and those still in tick_data begin (exports
-- read the archive below it and tick_data from it on, so no tick is read twice).
CREATE FUNCTION tick_archive_upto(p_instrument integer) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN is_fo_contract((SELECT instrument_type FROM instruments WHERE id = p_instrument))
                THEN coalesce((SELECT upto FROM archive_progress WHERE what = 'ticks'), '-infinity')
                ELSE '-infinity' END
$$;
