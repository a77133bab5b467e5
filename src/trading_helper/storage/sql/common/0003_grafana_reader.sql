-- grafana_reader: the read-only role Grafana's datasource logs in as.
--
-- Roles are cluster-wide while this migration runs once per database, and several databases on
-- one server may migrate at the same moment (the test suite does), so the role is created only
-- when missing and a concurrent creator's win ("already exists", or the unique index of
-- pg_authid) is not an error. It is created NOLOGIN: it can log in only after the migration
-- runner sets a password from the environment (GRAFANA_DB_PASSWORD, as a SCRAM verifier), so
-- no password ever sits in this file or in the database's history.
--
-- Grants are per database (privileges live with the objects): CONNECT, USAGE on the schema and
-- SELECT on the market data the dashboards read: ticks, candles and, for the merged read path
-- read_candles() (version 2, it runs as the caller), broker history, capture coverage, the
-- instruments and their trading sessions. candle_watermarks is read by the plain PostgreSQL
-- flavour's candle views through a function that also runs as the caller. Nothing else: not
-- the subscriptions, broker ids, stream offsets or fetch bookkeeping.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader') THEN
        BEGIN
            CREATE ROLE grafana_reader NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another database's migration created it first
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot create role grafana_reader (no CREATEROLE): '
                             'create it yourself, then migrate again';
        END;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO grafana_reader', current_database());
        GRANT USAGE ON SCHEMA public TO grafana_reader;
        GRANT SELECT ON tick_data, candles_1m, candles_5m, candles_15m, candles_1h, candles_1d,
                        broker_candles, instruments, live_coverage, market_calendars, market_sessions
                     TO grafana_reader;
        IF to_regclass('candle_watermarks') IS NOT NULL THEN
            GRANT SELECT ON candle_watermarks TO grafana_reader;
        END IF;
    END IF;
END $$;
