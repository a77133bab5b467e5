"""Named SQL of the permanent F&O archive (migration 0013; ``export/archive.py``)."""

from __future__ import annotations

#: $1 candles kept (bool), $2 what happens to F&O ticks: drop, keep or parquet
SET_POLICY = """
UPDATE archive_policy SET candles = $1, ticks = $2, updated_at = now()
WHERE candles IS DISTINCT FROM $1 OR ticks IS DISTINCT FROM $2
"""
#: $1 what (candles, ticks, tick_files)
PROGRESS = "SELECT upto FROM archive_progress WHERE what = $1"
SET_PROGRESS = """
INSERT INTO archive_progress (what, upto) VALUES ($1, $2) ON CONFLICT (what) DO UPDATE SET upto = excluded.upto
"""
#: $1 from, $2 to: the futures and options with ticks in [from, to), by id
FO_WITH_TICKS = """
SELECT i.id FROM instruments i
WHERE is_fo_contract(i.instrument_type)
  AND EXISTS (SELECT 1 FROM tick_data t WHERE t.instrument_id = i.id AND t.time >= $1 AND t.time < $2)
ORDER BY i.id
"""
#: the earliest tick stored
FIRST_TICK = "SELECT min(time) FROM tick_data"
#: $1 now: archive_market_data() alone (apply_retention() runs it before the retention table)
ARCHIVE_NOW = "SELECT archive_market_data($1)"
