-- Version 16, both flavours: the writers' volume state goes into a log, one row per commit.
--
-- Every commit of a stream writer carried one upserted tick_volume_state row per instrument whose
-- baseline it moved: nearly one per tick at a full option chain, and each cost the database more
-- than the tick's own row (a primary-key probe, a new row version, its index entry). Now the commit
-- appends the same columns as arrays, one row per commit (no index entry per instrument, stored
-- uncompressed out of line), and maintenance folds the log into tick_volume_state every few
-- seconds (the latest row per instrument, then the folded log rows deleted, in one statement).
-- The state is tick_volume_state merged with the log (trading_helper.ingest.volume: per
-- instrument the later baseline).
CREATE TABLE tick_volume_log (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream        text NOT NULL,
    instrument_id integer[] NOT NULL,
    trading_day   integer[] NOT NULL,   -- IST day, days since 1970-01-01 (-1: no baseline)
    volume        bigint[] NOT NULL,    -- the baseline (-1: none)
    last_us       bigint[] NOT NULL,    -- times as epoch microseconds (-1: none)
    trade_us      bigint[] NOT NULL,
    capture_us    bigint[] NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE tick_volume_log
    ALTER COLUMN instrument_id SET STORAGE EXTERNAL,
    ALTER COLUMN trading_day SET STORAGE EXTERNAL,
    ALTER COLUMN volume SET STORAGE EXTERNAL,
    ALTER COLUMN last_us SET STORAGE EXTERNAL,
    ALTER COLUMN trade_us SET STORAGE EXTERNAL,
    ALTER COLUMN capture_us SET STORAGE EXTERNAL;

COMMENT ON TABLE tick_volume_log IS
    'Volume state changes of each writer commit (arrays, one row per commit), folded into '
    'tick_volume_state by maintenance; the state is the table merged with this log.';
