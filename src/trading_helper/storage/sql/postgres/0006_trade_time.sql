-- Version 6, plain PostgreSQL: candles from trades.
--
-- tick_data holds trades only, and its `time` is the time of the trade the price belongs to
-- (Kite last_trade_time, Fyers last_traded_time; the exchange time where the feed has none); the
-- feed's own time is kept in exchange_time (NULL on rows written before this version). Updates
-- that carry no new trade (quote or depth changes, snapshots at (re)subscribe) are stored in
-- quote_updates, the same on both flavours, so that the candle rollup and the TimescaleDB
-- continuous aggregates need no redefinition (dropping an aggregate would delete its candles).
ALTER TABLE tick_data ADD COLUMN exchange_time timestamptz;

COMMENT ON COLUMN tick_data.time IS
    'Time of the trade (last-trade time, else exchange time), made unique per instrument; candles bucket by it.';
COMMENT ON COLUMN tick_data.exchange_time IS 'The feed''s exchange time of the update (NULL before version 6).';
COMMENT ON TABLE tick_data IS 'Trades by trade time, partitioned by UTC day; kept 7 days.';

CREATE TABLE quote_updates (
    time          timestamptz NOT NULL,        -- exchange (feed) time of the update
    instrument_id integer NOT NULL,
    ltp           double precision NOT NULL,
    last_qty      integer,
    volume        bigint,                      -- cumulative day volume (unchanged: no new trade)
    avg_price     double precision,
    open_interest bigint,
    bid_price     double precision,
    bid_qty       integer,
    ask_price     double precision,
    ask_qty       integer,
    received_at   timestamptz NOT NULL,
    trade_time    timestamptz                  -- the last trade it repeats, when the feed says
) PARTITION BY RANGE (time);
CREATE INDEX quote_updates_instrument_time_idx ON quote_updates (instrument_id, time DESC);

COMMENT ON TABLE quote_updates IS
    'Updates that carry no new trade (quotes, depth, OI, snapshots), partitioned by UTC day; kept as long as ticks.';

-- Daily partitions of tick_data and quote_updates covering [p_from, p_to]; the writer calls it
-- before a COPY whose rows fall on a day it has not seen yet. Returns how many it created.
CREATE OR REPLACE FUNCTION ensure_tick_partitions(p_from timestamptz, p_to timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d        date;
    last_day date := (p_to AT TIME ZONE 'UTC')::date;
    parent   text;
    part     text;
    created  integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('trading_helper.tick_partitions'));
    FOREACH parent IN ARRAY ARRAY['tick_data', 'quote_updates'] LOOP
        d := (p_from AT TIME ZONE 'UTC')::date;
        WHILE d <= last_day LOOP
            part := parent || '_' || to_char(d, 'YYYYMMDD');
            IF to_regclass(part) IS NULL THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', part, parent,
                               d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            END IF;
            d := d + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END $$;

-- quote_updates follows tick_data's retention (its row in retention_policy): whole partitions.
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
        WHERE i.inhparent IN ('tick_data'::regclass, 'quote_updates'::regclass)
    LOOP
        -- partition <parent>_YYYYMMDD holds that UTC day; drop it once all of it is too old
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

-- quote_updates partitions for the days tick_data already has partitions for (the writer's
-- partition cache knows those days and would not ask again)
SELECT ensure_tick_partitions(
    coalesce((SELECT min(to_date(right(c.relname, 8), 'YYYYMMDD'))::timestamp AT TIME ZONE 'UTC'
              FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'tick_data'::regclass), now() - interval '1 day'),
    greatest(now() + interval '1 day',
             (SELECT max(to_date(right(c.relname, 8), 'YYYYMMDD'))::timestamp AT TIME ZONE 'UTC'
              FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'tick_data'::regclass)));
