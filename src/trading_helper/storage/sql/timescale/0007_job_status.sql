-- job_status: one row per maintenance job with the same columns on both flavours. Here the
-- TimescaleDB jobs of this schema (policies and apply_retention_job; ids from 1000, so not
-- TimescaleDB's own housekeeping) as its scheduler records them, and the fallback refreshes the
-- service ran itself (maintenance_runs). A job that never ran has NULL times; job_errors keeps
-- every failed run, the newest is shown.
CREATE VIEW job_status AS
SELECT CASE j.proc_name
           WHEN 'policy_refresh_continuous_aggregate' THEN 'refresh ' || j.hypertable_name
           WHEN 'policy_retention' THEN 'retention ' || j.hypertable_name
           WHEN 'policy_compression' THEN 'compression ' || j.hypertable_name
           ELSE j.proc_name::text
       END AS job,
       j.job_id,
       CASE j.proc_name
           WHEN 'policy_refresh_continuous_aggregate' THEN 'refresh'
           WHEN 'policy_compression' THEN 'compression'
           ELSE 'retention'
       END AS kind,
       j.hypertable_name::text AS relation,
       j.schedule_interval,
       j.scheduled,
       nullif(s.last_run_started_at, '-infinity') AS last_start,
       nullif(s.last_successful_finish, '-infinity') AS last_success,
       coalesce(s.last_run_status = 'Failed', false) AS last_run_failed,
       e.err_message AS last_error,
       e.finish_time AS last_error_at,
       coalesce(s.total_runs, 0) AS total_runs,
       coalesce(s.total_failures, 0) AS total_failures
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
LEFT JOIN LATERAL (
    SELECT err_message, finish_time FROM timescaledb_information.job_errors x
    WHERE x.job_id = j.job_id ORDER BY x.start_time DESC LIMIT 1) e ON true
WHERE j.job_id >= 1000
UNION ALL
SELECT job, NULL::integer, kind, relation, schedule_interval, true, last_start, last_success,
       last_run_failed, last_error, last_error_at, total_runs, total_failures
FROM maintenance_runs;

COMMENT ON VIEW job_status IS
    'Maintenance jobs and their last runs (TimescaleDB: its policy jobs, and the service''s '
    'fallback refreshes).';

-- The windows of one candle level that a refresh must cover now, lowest level first (the
-- service's catch-up after late data and its fallback when a policy failed):
--   * what TimescaleDB logged as invalidated below the level's watermark (ticks written for
--     buckets already materialised: a drained backlog, a restart, a backfill; or rows of the
--     level below that its own refresh changed), and
--   * with p_unmaterialised, the part above the watermark that the policy should have
--     materialised by now (up to now - end_offset).
-- Both are clipped to the policy's window (never before now - start_offset: a refresh over
-- ticks already dropped by retention would delete their candles) and never past the watermark
-- of the level below (a level is built from the materialised rows of the one below). Windows
-- are widened to whole buckets plus one bucket either side: TimescaleDB before 2.25.2 aligns
-- manual refresh windows to UTC hours/days ignoring the bucket origin (timescaledb #9308), so it
-- would find a one-IST-day window "too small" and drop the first and last 1h bucket (09:15
-- IST is :45 UTC) of a window. Reads TimescaleDB's catalog (the invalidation logs have no
-- public view); checked on 2.23.
-- TimescaleDB's internal time of a timestamptz: microseconds since the Unix epoch, as its
-- invalidation logs store them (the inverse of _timescaledb_functions.to_timestamp).
CREATE FUNCTION candle_internal_time(p_ts timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT (extract(epoch FROM p_ts) * 1000000)::bigint $$;

CREATE FUNCTION candle_refresh_windows(p_level regclass, p_width interval, p_unmaterialised boolean,
                                       p_now timestamptz DEFAULT now())
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
                     date_bin(p_width, p_now - end_offset, TIMESTAMPTZ '2000-01-03 00:15:00+05:30')) AS hi
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
        SELECT tstzrange(greatest(b.lo, b.watermark), b.hi)
        FROM bounds b
        WHERE p_unmaterialised AND greatest(b.lo, b.watermark) < b.hi
    ), widened AS (
        SELECT range_agg(tstzrange(
                   date_bin(p_width, lower(r), TIMESTAMPTZ '2000-01-03 00:15:00+05:30') - p_width,
                   least(date_bin(p_width, upper(r) - interval '1 microsecond',
                                  TIMESTAMPTZ '2000-01-03 00:15:00+05:30') + 2 * p_width,
                         (SELECT hi FROM bounds)))) AS m
        FROM invalid WHERE NOT isempty(r) AND lower(r) < (SELECT hi FROM bounds)
    )
    SELECT lower(w), upper(w) FROM widened, unnest(m) AS w WHERE NOT isempty(w) ORDER BY 1
$$;

COMMENT ON FUNCTION candle_refresh_windows(regclass, interval, boolean, timestamptz) IS
    'Windows of a candle level to refresh now: invalidated below its watermark, and (optionally) '
    'un-materialised up to now - end_offset. Read by the service''s catch-up and fallback.';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader') THEN
        GRANT SELECT ON job_status TO grafana_reader;
    END IF;
END $$;
