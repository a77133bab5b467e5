-- TimescaleDB: the snapshot tables of common/0013 become hypertables of one-day chunks, dropped
-- by retention policies after 90 days (the 'option_snapshots' row of retention_policy).
SELECT create_hypertable('option_chain_snapshots', by_range('as_of', INTERVAL '1 day'));
SELECT create_hypertable('option_quote_snapshots', by_range('as_of', INTERVAL '1 day'));
SELECT add_retention_policy('option_chain_snapshots', drop_after => INTERVAL '90 days');
SELECT add_retention_policy('option_quote_snapshots', drop_after => INTERVAL '90 days');

-- The same functions as on plain PostgreSQL; chunks are created on insert and dropped by the
-- policies above, so both have nothing to do here.
CREATE FUNCTION ensure_option_partitions(p_from timestamptz, p_to timestamptz) RETURNS integer
LANGUAGE sql AS $$ SELECT 0 $$;
CREATE FUNCTION prune_option_snapshots(p_now timestamptz DEFAULT now()) RETURNS integer
LANGUAGE sql AS $$ SELECT 0 $$;

-- Grafana's option panels (OI by strike, PCR and ATM IV over time) read both tables
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader') THEN
        GRANT SELECT ON option_chain_follows, option_chain_snapshots, option_quote_snapshots TO grafana_reader;
    END IF;
END $$;
