-- Version 11, TimescaleDB: late data that TimescaleDB never logs as an invalidation.
--
-- Before 2.25.2 TimescaleDB aligns a hierarchical level's invalidation threshold to UTC buckets,
-- ignoring the origin (timescaledb #9308; our engine in tests is 2.23): after a refresh of
-- candles_1d the threshold on candles_1h's rows sits at 00:00 UTC while the watermark sits at the
-- end of the IST day, 18:45 UTC. Rows of the level below changed between the two (an IST
-- morning, where the whole trading session lies) are above the threshold, so no invalidation is
-- logged, yet below the watermark, so nothing materialises them again: a late tick reached 1m to
-- 1h and never 1d (1h has the same 45-minute gap). The service's catch-up knows what it just
-- refreshed one level down; it now passes those windows (p_changed) and refreshes them with
-- force => true, which re-materialises every bucket of the window whatever the log says.
-- Body otherwise as in version 10 (a new parameter makes a new signature: the old one is dropped
-- so that a three-argument call stays unambiguous).

DROP FUNCTION candle_refresh_windows(regclass, interval, boolean, timestamptz);

CREATE FUNCTION candle_refresh_windows(p_level regclass, p_width interval, p_unmaterialised boolean,
                                       p_now timestamptz DEFAULT now(),
                                       p_changed tstzmultirange DEFAULT NULL)
RETURNS TABLE (window_start timestamptz, window_end timestamptz)
LANGUAGE sql STABLE AS $$
    WITH cagg AS (
        SELECT c.mat_hypertable_id AS mat, c.raw_hypertable_id AS raw,
               -- nothing materialised yet: the watermark is the lowest time there is (4714 BC)
               CASE WHEN _timescaledb_functions.cagg_watermark(c.mat_hypertable_id) > -210866803200000000
                    THEN _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(c.mat_hypertable_id))
               END AS watermark,
               (SELECT _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(p.mat_hypertable_id))
                FROM _timescaledb_catalog.continuous_agg p
                WHERE p.mat_hypertable_id = c.parent_mat_hypertable_id) AS parent_watermark,
               coalesce((SELECT (j.config->>'start_offset')::interval FROM timescaledb_information.jobs j
                         WHERE j.proc_name = 'policy_refresh_continuous_aggregate'
                           AND j.hypertable_name = c.user_view_name), interval '6 days') AS start_offset,
               coalesce((SELECT (j.config->>'end_offset')::interval FROM timescaledb_information.jobs j
                         WHERE j.proc_name = 'policy_refresh_continuous_aggregate'
                           AND j.hypertable_name = c.user_view_name), p_width) AS end_offset
        FROM _timescaledb_catalog.continuous_agg c
        WHERE format('%I.%I', c.user_view_schema, c.user_view_name)::regclass = p_level
    ), bounds AS (
        SELECT *, p_now - start_offset AS lo,
               least(coalesce(parent_watermark, 'infinity'),
                     th_bucket(p_width, p_now - end_offset)) AS hi
        FROM cagg
    ), invalid AS (
        SELECT tstzrange(_timescaledb_functions.to_timestamp(greatest(l.lowest_modified_value,
                             candle_internal_time(b.lo))),
                         _timescaledb_functions.to_timestamp(least(l.greatest_modified_value,
                             candle_internal_time(least(b.hi, b.watermark)) - 1) + 1)) AS r
        FROM bounds b
        JOIN (SELECT hypertable_id AS id, lowest_modified_value, greatest_modified_value
              FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log
              UNION ALL
              SELECT -materialization_id, lowest_modified_value, greatest_modified_value
              FROM _timescaledb_catalog.continuous_aggs_materialization_invalidation_log) l
          ON l.id IN (b.raw, -b.mat)
        WHERE b.watermark IS NOT NULL AND b.lo < least(b.hi, b.watermark)
          AND l.greatest_modified_value >= candle_internal_time(b.lo)
          AND l.lowest_modified_value < candle_internal_time(least(b.hi, b.watermark))
        UNION ALL
        -- what the level below changed in this catch-up, where this level is already materialised
        SELECT tstzrange(greatest(lower(c), b.lo), least(upper(c), b.hi, b.watermark))
        FROM bounds b, unnest(p_changed) AS c
        WHERE p_changed IS NOT NULL AND b.watermark IS NOT NULL
          AND greatest(lower(c), b.lo) < least(upper(c), b.hi, b.watermark)
        UNION ALL
        SELECT tstzrange(greatest(b.lo, b.watermark), b.hi)
        FROM bounds b
        WHERE p_unmaterialised AND greatest(b.lo, b.watermark) < b.hi
    ), widened AS (
        SELECT range_agg(tstzrange(
                   th_bucket(p_width, lower(r)) - p_width,
                   least(th_bucket(p_width, upper(r) - interval '1 microsecond') + 2 * p_width,
                         (SELECT hi FROM bounds)))) AS m
        FROM invalid WHERE NOT isempty(r) AND lower(r) < (SELECT hi FROM bounds)
    )
    SELECT lower(w), upper(w) FROM widened, unnest(m) AS w WHERE NOT isempty(w) ORDER BY 1
$$;

COMMENT ON FUNCTION candle_refresh_windows(regclass, interval, boolean, timestamptz, tstzmultirange) IS
    'Windows of a candle level to refresh now: invalidated below its watermark, changed one level '
    'down in this catch-up (p_changed), and (optionally) un-materialised up to now - end_offset. '
    'Read by the service''s catch-up and fallback.';
