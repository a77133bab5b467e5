-- Job health (issue 17): the runs of the maintenance the service itself performs.
--
-- On plain PostgreSQL the service runs the candle rollup (refresh_candles()) and retention
-- (apply_retention()) on its own timer; each run's outcome is recorded here, so a rollup that
-- keeps failing is as visible as a failed TimescaleDB policy. On TimescaleDB the policies are
-- TimescaleDB jobs (timescaledb_information.jobs / job_stats / job_errors); the service records
-- here the refreshes it runs itself when a policy failed (the fallback). The view job_status
-- (flavour files of this version) shows both kinds with the same columns.
CREATE TABLE maintenance_runs (
    job               text PRIMARY KEY,          -- refresh_candles, apply_retention, fallback candles_5m ...
    kind              text NOT NULL,             -- refresh | retention
    relation          text,                      -- what it maintains (candles, tick_data, a candle level)
    schedule_interval interval NOT NULL,         -- how often the service runs it
    last_start        timestamptz,
    last_finish       timestamptz,
    last_success      timestamptz,
    last_run_failed   boolean NOT NULL DEFAULT false,
    last_error        text,                      -- the error of the last failed run (kept after a success)
    last_error_at     timestamptz,
    total_runs        bigint NOT NULL DEFAULT 0,
    total_failures    bigint NOT NULL DEFAULT 0
);

COMMENT ON TABLE maintenance_runs IS
    'Outcome of the maintenance runs the service performs itself (rollup, retention, fallback '
    'refreshes); read through the job_status view.';
