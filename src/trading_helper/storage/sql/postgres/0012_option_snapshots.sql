-- Plain PostgreSQL: the snapshot tables of common/0013 become tables partitioned by UTC day
-- (same names, columns and keys), so retention drops whole partitions as for tick_data.
CREATE TABLE option_chain_snapshots_p (LIKE option_chain_snapshots INCLUDING ALL) PARTITION BY RANGE (as_of);
DROP TABLE option_chain_snapshots;
ALTER TABLE option_chain_snapshots_p RENAME TO option_chain_snapshots;
ALTER INDEX option_chain_snapshots_p_pkey RENAME TO option_chain_snapshots_pkey;
CREATE TABLE option_quote_snapshots_p (LIKE option_quote_snapshots INCLUDING ALL) PARTITION BY RANGE (as_of);
DROP TABLE option_quote_snapshots;
ALTER TABLE option_quote_snapshots_p RENAME TO option_quote_snapshots;
ALTER INDEX option_quote_snapshots_p_pkey RENAME TO option_quote_snapshots_pkey;

-- The daily partitions of both tables covering [p_from, p_to]; the recorder calls it before it
-- writes a snapshot on a day it has not written yet. Returns how many partitions it created.
CREATE FUNCTION ensure_option_partitions(p_from timestamptz, p_to timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d        date := (p_from AT TIME ZONE 'UTC')::date;
    last_day date := (p_to AT TIME ZONE 'UTC')::date;
    parent   text;
    part     text;
    created  integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('trading_helper.option_partitions'));
    WHILE d <= last_day LOOP
        FOREACH parent IN ARRAY ARRAY['option_chain_snapshots', 'option_quote_snapshots'] LOOP
            part := parent || '_' || to_char(d, 'YYYYMMDD');
            IF to_regclass(part) IS NULL THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               part, parent, d::timestamp AT TIME ZONE 'UTC',
                               (d + 1)::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            END IF;
        END LOOP;
        d := d + 1;
    END LOOP;
    RETURN created;
END $$;

-- Drops the partitions wholly older than the 'option_snapshots' row of retention_policy; the
-- recorder calls it once an hour. Returns how many partitions it dropped.
CREATE FUNCTION prune_option_snapshots(p_now timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    keep    interval := (SELECT keep FROM retention_policy WHERE relation = 'option_snapshots');
    part    record;
    dropped integer := 0;
BEGIN
    IF keep IS NULL THEN
        RETURN 0;
    END IF;
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent IN ('option_chain_snapshots'::regclass, 'option_quote_snapshots'::regclass)
    LOOP
        IF (to_date(right(part.relname, 8), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'
           <= p_now - keep THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END $$;

-- Grafana's option panels (OI by strike, PCR and ATM IV over time) read both tables
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader') THEN
        GRANT SELECT ON option_chain_follows, option_chain_snapshots, option_quote_snapshots TO grafana_reader;
    END IF;
END $$;
