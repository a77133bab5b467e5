-- Broker history follows the retention table per timeframe, and so does the record of what was
-- fetched: a range whose candles were pruned is no longer "fetched", so a later request for it is
-- a gap again instead of an empty chart. Both flavours' apply_retention() call this.
CREATE FUNCTION prune_broker_history(p_now timestamptz DEFAULT now()) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    pol     record;
    horizon timestamptz;
BEGIN
    FOR pol IN SELECT substr(relation, 9) AS timeframe, keep FROM retention_policy
               WHERE relation LIKE 'candles_%' AND keep IS NOT NULL LOOP
        horizon := p_now - pol.keep;
        DELETE FROM broker_candles WHERE timeframe = pol.timeframe AND bucket < horizon;
        DELETE FROM fetch_coverage WHERE timeframe = pol.timeframe AND upper(period) <= horizon;
        UPDATE fetch_coverage SET period = tstzrange(horizon, upper(period))
        WHERE timeframe = pol.timeframe AND lower(period) < horizon AND upper(period) > horizon;
    END LOOP;
END $$;
