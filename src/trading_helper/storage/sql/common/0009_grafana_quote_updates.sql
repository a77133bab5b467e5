-- Version 9, both flavours: Grafana's quote, bid/ask, ingest-rate and lag panels read the updates
-- with no new trade too (quote_updates, version 6), so the read-only role may read them.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader') THEN
        GRANT SELECT ON quote_updates TO grafana_reader;
    END IF;
END $$;
