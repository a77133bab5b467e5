-- Version 18, both flavours: the fold of the volume log updates tick_volume_state in place.
--
-- Every few seconds maintenance folds the log into tick_volume_state: one upsert per instrument
-- that traded meanwhile (12,000 rows at a full option chain). On full pages each of those updates
-- wrote its new row version on another page, with a new primary-key entry (145 ms of a 320 ms fold
-- on the build machine). With half of each page kept free, the new version stays on its page as
-- a heap-only tuple (no index entry; the upsert took 83 ms). CLUSTER rewrites the existing rows
-- with the new fill factor (a table of one row per instrument: milliseconds).
ALTER TABLE tick_volume_state SET (fillfactor = 50);
CLUSTER tick_volume_state USING tick_volume_state_pkey;
