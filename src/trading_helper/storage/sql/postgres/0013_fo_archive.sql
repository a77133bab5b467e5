-- Version 13, plain PostgreSQL: F&O ticks kept forever (archive_policy.ticks = 'keep') go to a
-- plain table beside the daily tick partitions, with the columns of tick_data.
CREATE TABLE tick_archive (LIKE tick_data);
CREATE INDEX tick_archive_instrument_time_idx ON tick_archive (instrument_id, time);

COMMENT ON TABLE tick_archive IS 'Ticks of futures and options kept forever (ARCHIVE_FO_TICKS=keep).';
