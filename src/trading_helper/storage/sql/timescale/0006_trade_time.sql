-- Version 6, TimescaleDB: candles from trades.
--
-- tick_data holds trades only, and its `time` is the time of the trade the price belongs to
-- (Kite last_trade_time, Fyers last_traded_time; the exchange time where the feed has none); the
-- feed's own time is kept in exchange_time (NULL on rows written before this version). Updates
-- that carry no new trade (quote or depth changes, snapshots at (re)subscribe) are stored in
-- quote_updates, the same on both flavours. Keeping them out of tick_data is what lets the
-- continuous aggregates stay as they are: filtering them inside the aggregates would mean
-- redefining them, and dropping a continuous aggregate deletes every candle it materialised.
-- A nullable column without a default is a catalogue change, also on compressed chunks.
ALTER TABLE tick_data ADD COLUMN exchange_time timestamptz;

COMMENT ON COLUMN tick_data.time IS
    'Time of the trade (last-trade time, else exchange time), made unique per instrument; candles bucket by it.';
COMMENT ON COLUMN tick_data.exchange_time IS 'The feed''s exchange time of the update (NULL before version 6).';
COMMENT ON TABLE tick_data IS
    'Trades by trade time. 1-day chunks, compressed after 1 day, dropped after 7 days. '
    'volume is the broker''s cumulative day volume; volume_delta the per-tick traded quantity '
    '(candle volume is its sum).';

CREATE TABLE quote_updates (
    time          timestamptz      NOT NULL,  -- exchange (feed) time of the update
    instrument_id integer          NOT NULL,
    ltp           double precision NOT NULL,
    last_qty      integer,
    volume        bigint,                     -- cumulative day volume (unchanged: no new trade)
    avg_price     double precision,
    open_interest bigint,
    bid_price     double precision,
    bid_qty       integer,
    ask_price     double precision,
    ask_qty       integer,
    received_at   timestamptz      NOT NULL,
    trade_time    timestamptz                 -- the last trade it repeats, when the feed says
);

SELECT create_hypertable('quote_updates', by_range('time', INTERVAL '1 day'));

CREATE INDEX quote_updates_instrument_time_idx ON quote_updates (instrument_id, time DESC);

ALTER TABLE quote_updates SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'instrument_id',
    timescaledb.compress_orderby = 'time'
);

SELECT add_compression_policy('quote_updates', compress_after => INTERVAL '1 day');

-- the same retention as ticks: tick_data's row of the retention table
SELECT add_retention_policy('quote_updates',
                            drop_after => (SELECT keep FROM retention_policy WHERE relation = 'tick_data'));

COMMENT ON TABLE quote_updates IS
    'Updates that carry no new trade (quotes, depth, OI, snapshots). 1-day chunks, compressed after '
    '1 day, kept as long as ticks.';
