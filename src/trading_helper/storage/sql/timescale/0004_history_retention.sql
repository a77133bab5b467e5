-- apply_retention() now prunes broker history through prune_broker_history() (common/0004);
-- ticks and candles are still pruned by TimescaleDB's retention policies.
CREATE OR REPLACE FUNCTION apply_retention(p_now timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM prune_broker_history(p_now);
    RETURN 0;
END $$;
