-- apply_retention() now prunes broker history through prune_broker_history() (common/0004).
CREATE OR REPLACE FUNCTION apply_retention(p_now timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    keep_ticks interval := (SELECT keep FROM retention_policy WHERE relation = 'tick_data');
    part    record;
    dropped integer := 0;
    pol     record;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'tick_data'::regclass
    LOOP
        -- partition tick_data_YYYYMMDD holds that UTC day; drop it once all of it is too old
        IF (to_date(right(part.relname, 8), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'
           <= p_now - keep_ticks THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    FOR pol IN SELECT relation, keep FROM retention_policy
               WHERE relation LIKE 'candles_%' AND keep IS NOT NULL LOOP
        EXECUTE format('DELETE FROM %I WHERE bucket < $1', pol.relation || '_mat') USING p_now - pol.keep;
    END LOOP;
    PERFORM prune_broker_history(p_now);
    DELETE FROM candle_invalidations WHERE bucket < p_now - keep_ticks;
    RETURN dropped;
END $$;
