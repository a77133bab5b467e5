"""Named SQL of reconciliation (``reconcile/``): the subscribed instruments and their broker
tokens, a day's sessions, live 1m candles and coverage, and the runs, per-instrument results and
differences (migration 0014)."""

from __future__ import annotations

#: the subscribed instruments with the broker's token ($1 broker), in id order
SUBSCRIBED = """
SELECT s.instrument_id, b.broker_token, instrument_calendar(s.instrument_id) AS calendar
FROM subscriptions s
JOIN instrument_broker_ids b ON b.instrument_id = s.instrument_id AND b.broker = $1
ORDER BY s.instrument_id
"""

#: the sessions of calendar $1 on IST day $2
DAY_SESSIONS = """
SELECT lower(session) AS lo, upper(session) AS hi FROM market_sessions
WHERE calendar = $1 AND day = $2 ORDER BY lower(session)
"""

LIVE_1M = """
SELECT bucket, open, high, low, close, volume, open_interest FROM live_candles($1, '1m', $2, $3)
"""

#: the parts of [$2, $3) captured live for instrument $1
CAPTURED = "SELECT lower(r) AS lo, upper(r) AS hi FROM unnest(captured_ranges($1, tstzrange($2, $3))) AS r"

START_RUN = """
INSERT INTO reconcile_runs (day, broker, instruments) VALUES ($1, $2, $3)
ON CONFLICT (day, broker) DO UPDATE
SET started_at = now(), finished_at = NULL, instruments = excluded.instruments, done = 0, failed = 0, differences = 0
"""

PROGRESS = """
UPDATE reconcile_runs SET done = done + 1, failed = failed + $3::integer, differences = differences + $4
WHERE day = $1 AND broker = $2
"""

FINISH_RUN = "UPDATE reconcile_runs SET finished_at = now() WHERE day = $1 AND broker = $2"

CLEAR_DIFFERENCES = "DELETE FROM reconcile_differences WHERE day = $1 AND instrument_id = $2"

STORE_DIFFERENCES = """
INSERT INTO reconcile_differences (day, instrument_id, bucket, kind, live, broker)
SELECT $1, $2, u.bucket, u.kind, u.live, u.broker
FROM unnest($3::timestamptz[], $4::text[], $5::float8[], $6::float8[]) AS u(bucket, kind, live, broker)
"""

STORE_INSTRUMENT = """
INSERT INTO reconcile_instruments (day, instrument_id, broker, compared, live_candles, broker_candles, uncovered,
                                   differences, error, checked_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
ON CONFLICT (day, instrument_id) DO UPDATE
SET broker = excluded.broker, compared = excluded.compared, live_candles = excluded.live_candles,
    broker_candles = excluded.broker_candles, uncovered = excluded.uncovered, differences = excluded.differences,
    error = excluded.error, checked_at = excluded.checked_at
"""

RUNS = """
SELECT day, broker, started_at, finished_at, instruments, done, failed, differences
FROM reconcile_runs WHERE day = $1 ORDER BY broker
"""

INSTRUMENTS = """
SELECT r.instrument_id, i.exchange, i.tradingsymbol, r.broker, r.compared, r.live_candles, r.broker_candles,
       r.uncovered, r.differences, r.error,
       coalesce((SELECT jsonb_object_agg(k.kind, k.n) FROM (
           SELECT d.kind, count(*) AS n FROM reconcile_differences d
           WHERE d.day = r.day AND d.instrument_id = r.instrument_id GROUP BY d.kind) k), '{}')::text AS kinds
FROM reconcile_instruments r JOIN instruments i ON i.id = r.instrument_id
WHERE r.day = $1 ORDER BY r.instrument_id
"""

DIFFERENCES = """
SELECT instrument_id, bucket, kind, live, broker FROM reconcile_differences
WHERE day = $1 AND ($2::integer IS NULL OR instrument_id = $2) ORDER BY instrument_id, bucket, kind
LIMIT $3
"""

#: the latest NSE trading day whose sessions all ended by $2, unless broker $1 has reconciled it
DUE_DAY = """
WITH last AS (
    SELECT day FROM market_sessions WHERE calendar = 'NSE'
    GROUP BY day HAVING max(upper(session)) <= $2 ORDER BY day DESC LIMIT 1
)
SELECT l.day FROM last l
WHERE NOT EXISTS (SELECT 1 FROM reconcile_runs r WHERE r.day = l.day AND r.broker = $1 AND r.finished_at IS NOT NULL)
"""

#: the end of the next NSE session after $1
NEXT_SESSION_END = (
    "SELECT min(upper(session)) FROM market_sessions WHERE calendar = 'NSE' AND upper(session) > $1"
)
