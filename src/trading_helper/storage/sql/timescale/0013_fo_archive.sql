-- Version 13, TimescaleDB: F&O ticks kept forever (archive_policy.ticks = 'keep') go to a
-- hypertable of their own with the columns of tick_data, compressed like it, with no retention
-- policy. 30-day chunks: an archive is read by instrument over long ranges, not by the minute.
CREATE TABLE tick_archive (LIKE tick_data);

SELECT create_hypertable('tick_archive', by_range('time', INTERVAL '30 days'));

CREATE INDEX tick_archive_instrument_time_idx ON tick_archive (instrument_id, time);

ALTER TABLE tick_archive SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'instrument_id',
    timescaledb.compress_orderby = 'time'
);

SELECT add_compression_policy('tick_archive', compress_after => INTERVAL '1 day');

COMMENT ON TABLE tick_archive IS
    'Ticks of futures and options kept forever (ARCHIVE_FO_TICKS=keep); compressed, no retention.';
