-- Version 6, both flavours: candles from trades (tick_data.time is the trade's time, updates with
-- no new trade go to quote_updates: see the flavour files) and a volume baseline that survives
-- reconnects (trading_helper.ingest.volume).
--
-- tick_volume_state keeps, per instrument, what was already counted: the IST day and largest
-- cumulative volume seen (the baseline), the last-trade time that came with it (an update
-- repeating both is no new trade) and when the current capture started (a snapshot of a trade
-- older than that is no new trade either). A capture can start before any volume is known, so
-- the baseline columns may be empty.
ALTER TABLE tick_volume_state
    ALTER COLUMN trading_day DROP NOT NULL,
    ALTER COLUMN volume DROP NOT NULL,
    ALTER COLUMN last_time DROP NOT NULL,
    ADD COLUMN trade_time timestamptz,
    ADD COLUMN capture_from timestamptz;

COMMENT ON TABLE tick_volume_state IS
    'Per instrument: the day''s volume baseline (largest cumulative volume, its trade time), the '
    'latest stored trade time and the start of the current capture; survives reconnects and restarts.';
