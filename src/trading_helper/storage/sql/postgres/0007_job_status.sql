-- job_status: one row per maintenance job with the same columns on both flavours. Here every
-- job is one the service runs (maintenance_runs); job_id is NULL.
CREATE VIEW job_status AS
SELECT job, NULL::integer AS job_id, kind, relation, schedule_interval, true AS scheduled,
       last_start, last_success, last_run_failed, last_error, last_error_at,
       total_runs, total_failures
FROM maintenance_runs;

COMMENT ON VIEW job_status IS
    'Maintenance jobs and their last runs (plain PostgreSQL: the service''s rollup and retention).';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader') THEN
        GRANT SELECT ON job_status TO grafana_reader;
    END IF;
END $$;
