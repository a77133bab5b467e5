-- The writer never stops on a bad row and never loses one silently.

-- Rows the database refused (a CHECK or NOT NULL violation, a value out of range: SQLSTATE
-- classes 22 and 23). The writer isolates them from their batch, stores them here with the
-- reason in the same transaction as the batch's good rows and stream offset, and goes on: a
-- refused row is kept for inspection and replay, never retried forever.
CREATE TABLE tick_rejects (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text,                  -- the Redis stream the row came from (NULL: a direct write)
    relation    text NOT NULL,         -- where it was to go: tick_data or quote_updates
    entry_id    text,                  -- its stream entry
    row         jsonb NOT NULL,        -- the row as it was to be written (its relation's columns)
    sqlstate    text NOT NULL,
    reason      text NOT NULL,         -- SQLSTATE and the database's message
    rejected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tick_rejects_time_idx ON tick_rejects (rejected_at);

-- Per receiver run, the last stream entry committed from it: each entry carries
-- (run, entry number, ticks so far in the run), so an entry that does not follow the
-- committed one shows entries lost from the stream (Redis restarted without persistence);
-- `lost` counts their ticks. Written in the same transaction as ingest_offsets.
CREATE TABLE ingest_sequences (
    stream       text NOT NULL,
    receiver_run text NOT NULL,
    entry_no     bigint NOT NULL,
    ticks        bigint NOT NULL,
    lost         bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, receiver_run)
);

COMMENT ON TABLE tick_rejects IS 'Tick rows the database refused (SQLSTATE classes 22/23), with the reason; the rest of their batch was written.';
COMMENT ON TABLE ingest_sequences IS 'Last committed stream entry per receiver run (detects entries lost from the Redis stream).';
