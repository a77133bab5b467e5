"""Named SQL of live coverage (``live_coverage``: the time ranges captured per instrument and
broker; written by ``ingest/coverage.py``)."""

from __future__ import annotations

# The feed's time wins over an extension: during a silent stall the feed still reads connected,
# so the housekeeping extends past the last frame; the event then says when capture really ended.
CLOSE = """
UPDATE live_coverage
SET period = tstzrange(lower(period), greatest($3::timestamptz, lower(period) + interval '1 millisecond')),
    open = false
WHERE open AND broker = $1 AND instrument_id = ANY($2::integer[])
"""
OPEN = """
INSERT INTO live_coverage (instrument_id, broker, period, open)
SELECT i, $1, tstzrange($3::timestamptz, $3::timestamptz + interval '1 millisecond'), true
FROM unnest($2::integer[]) AS i
WHERE EXISTS (SELECT 1 FROM instruments WHERE id = i)
"""
EXTEND = """
UPDATE live_coverage SET period = tstzrange(lower(period), greatest(upper(period), $2::timestamptz))
WHERE open AND broker = $1
"""
CLOSE_STALE = "UPDATE live_coverage SET open = false WHERE open AND broker = $1"

# the same, for the instruments of one shard (a collector process owns only those)
EXTEND_OF = """
UPDATE live_coverage SET period = tstzrange(lower(period), greatest(upper(period), $3::timestamptz))
WHERE open AND broker = $1 AND instrument_id = ANY($2::integer[])
"""
CLOSE_STALE_OF = """
UPDATE live_coverage SET open = false WHERE open AND broker = $1 AND instrument_id = ANY($2::integer[])
"""
