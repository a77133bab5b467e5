"""Named SQL of the exchange calendars (``candles/calendar.py``): ``market_sessions`` holds each
trading day's session, ``market_calendar_loads`` which years were loaded from which source."""

from __future__ import annotations

#: of the years $2, those calendar $1 has not loaded from source $3
YEARS_TO_LOAD = """
SELECT y FROM unnest($2::integer[]) AS y
WHERE NOT EXISTS (SELECT 1 FROM market_calendar_loads l WHERE l.calendar = $1 AND l.year = y AND l.source = $3)
"""

#: one loader per (calendar, year) at a time, until the transaction ends
LOCK_YEAR = "SELECT pg_advisory_xact_lock(hashtext('trading_helper.calendar'), hashtext($1) # $2)"

DELETE_YEAR = "DELETE FROM market_sessions WHERE calendar = $1 AND day >= $2 AND day <= $3"

INSERT_SESSIONS = """
INSERT INTO market_sessions (calendar, day, session)
SELECT $1, d, tstzrange(o, c) FROM unnest($2::date[], $3::timestamptz[], $4::timestamptz[]) AS s(d, o, c)
"""

RECORD_LOAD = """
INSERT INTO market_calendar_loads (calendar, year, source, loaded_at) VALUES ($1, $2, $3, now())
ON CONFLICT (calendar, year) DO UPDATE SET source = excluded.source, loaded_at = excluded.loaded_at
"""
