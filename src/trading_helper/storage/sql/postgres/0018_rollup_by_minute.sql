-- Version 18, plain PostgreSQL: the rollup of a closed minute costs what the minute holds, not
-- what the day holds, and no longer sorts each candle's ticks.
--
-- * the 1m rebuild first summarises the tick partitions' new BRIN ranges. A range is
--   summarised only by VACUUM or by a call (autosummarize waits for autovacuum too); until then a
--   bitmap scan reads it whatever the condition, so the 1m rollup of each minute read every range
--   written since the partition's last VACUUM (and without statistics the planner scanned the
--   whole partition in parallel instead): in bench cluster (12,000 instruments, 2 ticks/s each)
--   0.8 s a minute after one minute of data, 1.5 s after three, without bound through the day.
--   A call reads only the pages written since the last one (~7 MB in 2 s at that rate, ~10 ms).
-- * the rebuilds plan without sequential scans (a partition without statistics, as before
--   its first ANALYZE or with autovacuum off, looked cheaper to scan whole than by its BRIN index),
--   without parallel workers (the rollup takes one core, never every core from the ingest) and
--   without JIT (~40 ms of compilation a minute, for a plan that runs once).
-- * the 1m level aggregates each (bucket, instrument) with plain aggregates (hashed, at scale):
--   first and last time, high, low, volume, count; the open, the close and the open interest are then the first and the last
--   tick's, read by the (instrument_id, time) index. Before, the minute's ticks were sorted by
--   bucket and instrument, and each group again by time for array_agg(... ORDER BY time), three
--   times: 1.8 s against 0.6 s for one minute of 12,000 instruments (1.44 million ticks) on the
--   build machine. The candles are the same (tests/storage/test_candles_property.py): ticks of an
--   instrument have distinct times (the writer makes them so), and a tie would be broken
--   arbitrarily by either.

CREATE OR REPLACE FUNCTION tick_brin_summarize() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    leaf    regclass;
    summed  integer := 0;
BEGIN
    FOR leaf IN SELECT relid FROM pg_partition_tree('tick_data_time_brin') WHERE isleaf LOOP
        summed := summed + brin_summarize_new_values(leaf);
    END LOOP;
    RETURN summed;
EXCEPTION WHEN insufficient_privilege THEN
    -- only the tables' owner may summarise: the rollup still works, reading more
    RETURN -1;
END $$;

-- The 1m level from the ticks: what candle_rebuild('1m', ...) now runs.
CREATE FUNCTION candle_rebuild_1m(p_ranges tstzmultirange) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off
SET max_parallel_workers_per_gather = 0
SET jit = off
AS $$
DECLARE
    r tstzrange;
BEGIN
    PERFORM tick_brin_summarize();
    FOR r IN SELECT unnest(p_ranges) LOOP
        DELETE FROM candles_1m_mat WHERE bucket >= lower(r) AND bucket < upper(r);
        INSERT INTO candles_1m_mat
        WITH g AS (
            SELECT th_bucket('1 minute', time) AS bucket, instrument_id,
                   min(time) AS first_time, max(time) AS last_time, max(ltp) AS high,
                   min(ltp) AS low, sum(volume_delta)::bigint AS volume, count(*) AS ticks
            FROM tick_data
            WHERE time >= lower(r) AND time < upper(r)
            GROUP BY 1, 2
        )
        SELECT g.bucket, g.instrument_id, o.ltp, g.high, g.low, c.ltp, g.volume, c.open_interest, g.ticks
        FROM g,
             LATERAL (SELECT t.ltp FROM tick_data t
                      WHERE t.instrument_id = g.instrument_id AND t.time = g.first_time LIMIT 1) o,
             LATERAL (SELECT t.ltp, t.open_interest FROM tick_data t
                      WHERE t.instrument_id = g.instrument_id AND t.time = g.last_time LIMIT 1) c;
    END LOOP;
END $$;

-- candle_rebuild() stays the one entry point (refresh_candles() and the query bench call it): the
-- 1m level goes to candle_rebuild_1m(), the levels above to version 10's body under a new name
-- (its 1m branch is no longer reached).
ALTER FUNCTION candle_rebuild(text, tstzmultirange) RENAME TO candle_rebuild_from_below;
ALTER FUNCTION candle_rebuild_from_below(text, tstzmultirange)
    SET enable_seqscan = off SET max_parallel_workers_per_gather = 0 SET jit = off;

CREATE FUNCTION candle_rebuild(p_level text, p_ranges tstzmultirange) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_level = '1m' THEN
        PERFORM candle_rebuild_1m(p_ranges);
    ELSE
        PERFORM candle_rebuild_from_below(p_level, p_ranges);
    END IF;
END $$;
