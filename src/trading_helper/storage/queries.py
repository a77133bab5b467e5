"""Named SQL statements of the storage layer. Values are always bound parameters, never
formatted into the text."""

from __future__ import annotations

INSTRUMENT_IDS = "SELECT id FROM instruments"

#: which of these ids are instruments (the writer asks for ids missing from its cache)
KNOWN_INSTRUMENT_IDS = "SELECT id FROM instruments WHERE id = ANY($1::integer[])"

LOAD_VOLUME_STATE = """
SELECT instrument_id, trading_day, volume, last_time, trade_time, capture_from FROM tick_volume_state
"""

UPSERT_VOLUME_STATE = """
INSERT INTO tick_volume_state (instrument_id, trading_day, volume, last_time, trade_time, capture_from)
SELECT * FROM unnest($1::integer[], $2::date[], $3::bigint[], $4::timestamptz[], $5::timestamptz[],
                     $6::timestamptz[])
ON CONFLICT (instrument_id) DO UPDATE
SET trading_day = excluded.trading_day, volume = excluded.volume, last_time = excluded.last_time,
    trade_time = excluded.trade_time, capture_from = excluded.capture_from
"""

UPSERT_OFFSET = """
INSERT INTO ingest_offsets (stream, last_id, updated_at) VALUES ($1, $2, now())
ON CONFLICT (stream) DO UPDATE SET last_id = excluded.last_id, updated_at = excluded.updated_at
"""

GET_OFFSET = "SELECT last_id FROM ingest_offsets WHERE stream = $1"

#: the stream's committed offset, with its row locked for the transaction (created at 0-0 when
#: missing): waits for an in-flight transaction that holds it, then reads what that one committed
LOCK_OFFSET = """
INSERT INTO ingest_offsets (stream, last_id, updated_at) VALUES ($1, '0-0', now())
ON CONFLICT (stream) DO UPDATE SET stream = excluded.stream
RETURNING last_id
"""

#: per receiver run: the last committed entry number and tick count; ``lost`` adds up
UPSERT_SEQUENCES = """
INSERT INTO ingest_sequences AS s (stream, receiver_run, entry_no, ticks, lost, updated_at)
SELECT $1, * , now() FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
ON CONFLICT (stream, receiver_run) DO UPDATE
SET entry_no = excluded.entry_no, ticks = excluded.ticks, lost = s.lost + excluded.lost, updated_at = now()
"""

GET_SEQUENCES = "SELECT receiver_run, entry_no, ticks FROM ingest_sequences WHERE stream = $1"

INSERT_TICK_REJECTS = """
INSERT INTO tick_rejects (stream, relation, entry_id, row, sqlstate, reason)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[])
"""

ENSURE_PARTITIONS = "SELECT ensure_tick_partitions($1, $2)"

REFRESH_CANDLES = "CALL refresh_candles()"

APPLY_RETENTION = "SELECT apply_retention()"

UPSERT_INSTRUMENTS = """
INSERT INTO instruments AS i (exchange, tradingsymbol, name, segment, instrument_type, expiry, strike,
                              option_type, lot_size, tick_size, expired, updated_at)
SELECT exchange, tradingsymbol, name, segment, instrument_type, expiry, strike, option_type,
       lot_size, tick_size, false, now()
FROM instrument_load
ON CONFLICT ON CONSTRAINT instruments_identity DO UPDATE
SET name = excluded.name, segment = excluded.segment, instrument_type = excluded.instrument_type,
    strike = excluded.strike, option_type = excluded.option_type, lot_size = excluded.lot_size,
    tick_size = excluded.tick_size, expired = false, updated_at = now()
"""

UPSERT_BROKER_IDS = """
INSERT INTO instrument_broker_ids AS b (broker, broker_token, instrument_id, broker_aux_id, updated_at)
SELECT $1, l.broker_token, i.id, l.broker_aux_id, now()
FROM instrument_load l
JOIN instruments i ON i.exchange = l.exchange AND i.tradingsymbol = l.tradingsymbol
                  AND i.expiry IS NOT DISTINCT FROM l.expiry
WHERE l.broker_token IS NOT NULL
ON CONFLICT (broker, broker_token) DO UPDATE
SET instrument_id = excluded.instrument_id, broker_aux_id = excluded.broker_aux_id, updated_at = now()
"""

# instruments this broker listed before but not now: expired contracts, kept and flagged
MARK_EXPIRED = """
UPDATE instruments i SET expired = true, updated_at = now()
FROM instrument_broker_ids b
WHERE b.instrument_id = i.id AND b.broker = $1 AND NOT i.expired
  AND NOT EXISTS (SELECT 1 FROM instrument_load l
                  WHERE l.exchange = i.exchange AND l.tradingsymbol = i.tradingsymbol
                    AND l.expiry IS NOT DISTINCT FROM i.expiry)
"""

LOOKUP_BROKER_TOKENS = """
SELECT broker_token, instrument_id FROM instrument_broker_ids
WHERE broker = $1 AND broker_token = ANY($2::text[])
"""

INSTRUMENT_COLUMNS = """i.id, i.exchange, i.tradingsymbol, i.name, i.segment, i.instrument_type, i.expiry,
i.strike, i.option_type, i.lot_size, i.tick_size, i.expired"""

GET_INSTRUMENT = f"SELECT {INSTRUMENT_COLUMNS} FROM instruments i WHERE i.id = $1"

GET_INSTRUMENT_BY_SYMBOL = (
    f"SELECT {INSTRUMENT_COLUMNS} FROM instruments i WHERE i.exchange = $1 AND i.tradingsymbol = $2 "
    "ORDER BY i.expired, i.expiry DESC NULLS FIRST LIMIT 1"
)

#: how search and plain-text references order equally good matches: indices, then futures by
#: expiry (the near month first), then the rest; NSE before other exchanges
INSTRUMENT_KIND_ORDER = """CASE WHEN i.segment = 'INDICES' OR i.instrument_type = 'INDEX' THEN 0
     WHEN i.instrument_type = 'FUT' THEN 1 ELSE 2 END, i.expiry NULLS FIRST, (i.exchange <> 'NSE')"""

# $1 the symbols a plain-text reference may mean (the text itself and an alias's targets)
GET_INSTRUMENT_BY_SYMBOLS = f"""
SELECT {INSTRUMENT_COLUMNS} FROM instruments i WHERE i.tradingsymbol = ANY($1::text[])
ORDER BY i.expired, {INSTRUMENT_KIND_ORDER}, i.id LIMIT 1
"""

BROKER_IDS_OF = "SELECT broker, broker_token, broker_aux_id FROM instrument_broker_ids WHERE instrument_id = $1"

# -- job health (storage/jobs.py) and candle catch-up (storage/catchup.py) -------------------
# Times travel as epoch seconds: the same statements run over asyncpg and, in the tests, over
# the JSON bridge of the TimescaleDB engine in Node, which carries no timestamp types.

JOB_STATUS = """
SELECT job, job_id, kind, relation, extract(epoch FROM schedule_interval)::float8 AS schedule_s, scheduled,
       extract(epoch FROM last_start)::float8 AS last_start, extract(epoch FROM last_success)::float8 AS last_success,
       last_run_failed, last_error, extract(epoch FROM last_error_at)::float8 AS last_error_at,
       total_runs, total_failures, extract(epoch FROM now())::float8 AS now
FROM job_status ORDER BY job
"""

#: TimescaleDB: is this database's job scheduler running (a background worker per database)?
SCHEDULER_ALIVE = """
SELECT EXISTS (SELECT 1 FROM pg_stat_activity
               WHERE datname = current_database()
                 AND (backend_type = 'TimescaleDB Background Worker Scheduler'
                      OR application_name = 'TimescaleDB Background Worker Scheduler')) AS alive
"""

RECORD_RUN = """
INSERT INTO maintenance_runs AS m (job, kind, relation, schedule_interval, last_start, last_finish, last_success,
                                   last_run_failed, last_error, last_error_at, total_runs, total_failures)
VALUES ($1, $2, $3, make_interval(secs => $4), to_timestamp($5), now(),
        CASE WHEN $6::text IS NULL THEN now() END, $6::text IS NOT NULL, $6::text,
        CASE WHEN $6::text IS NOT NULL THEN now() END, 1, CASE WHEN $6::text IS NULL THEN 0 ELSE 1 END)
ON CONFLICT (job) DO UPDATE
SET kind = excluded.kind, relation = excluded.relation, schedule_interval = excluded.schedule_interval,
    last_start = excluded.last_start, last_finish = excluded.last_finish,
    last_success = coalesce(excluded.last_success, m.last_success),
    last_run_failed = excluded.last_run_failed,
    last_error = coalesce(excluded.last_error, m.last_error),
    last_error_at = coalesce(excluded.last_error_at, m.last_error_at),
    total_runs = m.total_runs + 1, total_failures = m.total_failures + excluded.total_failures
"""

CANDLE_REFRESH_WINDOWS = """
SELECT extract(epoch FROM window_start)::float8 AS window_start, extract(epoch FROM window_end)::float8 AS window_end
FROM candle_refresh_windows($1::regclass, make_interval(secs => $2), $3)
"""

REFRESH_CONTINUOUS_AGGREGATE = (
    "CALL refresh_continuous_aggregate($1::regclass, to_timestamp($2::float8), to_timestamp($3::float8))")
