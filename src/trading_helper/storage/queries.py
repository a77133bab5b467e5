"""Named SQL statements of the storage layer: ticks and their ingest bookkeeping, candle rollup,
retention and job health. Values are always bound parameters, never formatted into the text.
Other topics have their own modules: ``sql_instruments`` (instruments, search, subscriptions),
``sql_coverage`` (live coverage), ``sql_candles`` (the read path, gaps, backfill, the query
bench's dataset), ``sql_calendar`` (market sessions), ``sql_dashboards`` (Grafana's panels),
``sql_server`` (liveness, roles, databases) and ``sql_schema`` (migration bookkeeping). No SQL
lives outside ``storage/`` but the benchmarks' scratch tables (``tests/test_layout.py``)."""

from __future__ import annotations

INSTRUMENT_IDS = "SELECT id FROM instruments"

#: which of these ids are instruments (the writer asks for ids missing from its cache)
KNOWN_INSTRUMENT_IDS = "SELECT id FROM instruments WHERE id = ANY($1::integer[])"


def _us(column: str) -> str:
    """A timestamptz column as epoch microseconds (-1: NULL); extract gives numeric: exact."""
    return f"coalesce((extract(epoch FROM {column}) * 1000000)::bigint, -1)"


def _ts(us: str) -> str:
    """Epoch microseconds as a timestamptz (-1: NULL); an integral interval product is exact."""
    return f"CASE WHEN {us} >= 0 THEN timestamptz 'epoch' + {us} * interval '1 microsecond' END"


# The volume state (ingest/volume.py's VolumeStateRow, in integers: days, epoch microseconds, -1
# unknown) is tick_volume_state overlaid by tick_volume_log (migration 0016): the commits append
# to the log, maintenance folds it into the table. Per instrument, the latest log entry wins (log
# rows in commit order per stream; an entry's arrays in order), else the table's row: one row per
# instrument, the fold's rule too.
_LOG_ROWS = """unnest(l.instrument_id, l.trading_day, l.volume, l.last_us, l.trade_us, l.capture_us)
    WITH ORDINALITY AS v(iid, day, vol, last_us, trade_us, capture_us, n)"""


def _latest_logged(source: str, where: str = "") -> str:
    return f"""SELECT DISTINCT ON (v.iid) v.iid, v.day, v.vol, v.last_us, v.trade_us, v.capture_us
    FROM {source} l, {_LOG_ROWS} {where}
    ORDER BY v.iid, l.seq DESC, v.n DESC"""


def _load_volume_state(where_table: str, where_log: str) -> str:
    return f"""
WITH logged AS ({_latest_logged("tick_volume_log", where_log)})
SELECT * FROM logged
UNION ALL
SELECT instrument_id, coalesce(trading_day - date '1970-01-01', -1), coalesce(volume, -1),
       {_us("last_time")}, {_us("trade_time")}, {_us("capture_from")}
FROM tick_volume_state s
WHERE NOT EXISTS (SELECT FROM logged WHERE logged.iid = s.instrument_id) {where_table}
"""


LOAD_VOLUME_STATE = _load_volume_state("", "")

#: the same for some instruments (a capture start: their state may have moved on in another stream)
LOAD_VOLUME_STATE_OF = _load_volume_state(
    "AND instrument_id = ANY($1::integer[])", "WHERE v.iid IN (SELECT unnest($1::integer[]))"
)


def _state_columns(v: str) -> str:
    """tick_volume_state's columns from the integer columns of ``v``."""
    return f"""{v}.iid, CASE WHEN {v}.day >= 0 THEN date '1970-01-01' + {v}.day END, NULLIF({v}.vol, -1),
       {_ts(f"{v}.last_us")}, {_ts(f"{v}.trade_us")}, {_ts(f"{v}.capture_us")}"""


def _volume_rows(first: int) -> str:
    """StateRow columns as six array parameters from ``$first`` on, as tick_volume_state's rows."""
    p = [f"${first + i}" for i in range(6)]
    return f"""SELECT {_state_columns("v")}
    FROM unnest({p[0]}::integer[], {p[1]}::integer[], {p[2]}::bigint[], {p[3]}::bigint[], {p[4]}::bigint[],
                {p[5]}::bigint[]) AS v(iid, day, vol, last_us, trade_us, capture_us)"""


_UPSERT_STATE = """
ON CONFLICT (instrument_id) DO UPDATE
SET trading_day = excluded.trading_day, volume = excluded.volume, last_time = excluded.last_time,
    trade_time = excluded.trade_time, capture_from = excluded.capture_from"""

#: the state of a write without a stream (no offset), straight into the table
UPSERT_VOLUME_STATE = f"""
INSERT INTO tick_volume_state (instrument_id, trading_day, volume, last_time, trade_time, capture_from)
{_volume_rows(1)}{_UPSERT_STATE}
"""

#: the log into the table, in one statement: every log row this transaction sees is deleted and
#: the latest of them per instrument upserted (rows of commits still in flight stay for the next
#: fold); returns how many instruments it wrote
FOLD_VOLUME_LOG = f"""
WITH folded AS (
    DELETE FROM tick_volume_log RETURNING *
), latest AS ({_latest_logged("folded")}
), written AS (
    INSERT INTO tick_volume_state (instrument_id, trading_day, volume, last_time, trade_time, capture_from)
    SELECT {_state_columns("latest")} FROM latest{_UPSERT_STATE}
    RETURNING 1
)
SELECT count(*) AS folded FROM written
"""

#: the stream's committed offset, with its row locked for the transaction (created at 0-0 when
#: missing): waits for an in-flight transaction that holds it, then reads what that one committed
LOCK_OFFSET = """
INSERT INTO ingest_offsets (stream, last_id, updated_at) VALUES ($1, '0-0', now())
ON CONFLICT (stream) DO UPDATE SET stream = excluded.stream
RETURNING last_id
"""

#: the columns of a commit's volume log row, COPYed in (storage/ticks.py: one binary row, the
#: arrays built by numpy; asyncpg's array parameters cost more than the rest of the commit)
VOLUME_LOG_COLUMNS = ("stream", "instrument_id", "trading_day", "volume", "last_us", "trade_us", "capture_us")

#: a commit's bookkeeping in one statement (one round trip, not two): per receiver run the last
#: committed entry number and tick count ($4-$7; ``lost`` adds up), and the stream's new offset,
#: only over the one this commit builds on ($3; NULL: none yet, as '0-0'). The volume state went
#: into tick_volume_log before it, in the same transaction. The offset's upsert waits for a
#: transaction holding the row, then compares with what that one committed. No row returned:
#: another transaction moved the offset (a writer that died mid-commit and whose commit finished
#: after this writer read the offset, or a second writer on the stream); the caller rolls back the
#: whole transaction.
COMMIT_OFFSET = """
WITH runs AS (
    INSERT INTO ingest_sequences AS s (stream, receiver_run, entry_no, ticks, lost, updated_at)
    SELECT $1, *, now() FROM unnest($4::text[], $5::bigint[], $6::bigint[], $7::bigint[])
    ON CONFLICT (stream, receiver_run) DO UPDATE
    SET entry_no = excluded.entry_no, ticks = excluded.ticks, lost = s.lost + excluded.lost,
        updated_at = now()
)
INSERT INTO ingest_offsets (stream, last_id, updated_at) VALUES ($1, $2, now())
ON CONFLICT (stream) DO UPDATE SET last_id = excluded.last_id, updated_at = excluded.updated_at
WHERE ingest_offsets.last_id = coalesce($3, '0-0')
RETURNING last_id
"""

GET_SEQUENCES = "SELECT receiver_run, entry_no, ticks FROM ingest_sequences WHERE stream = $1"

INSERT_TICK_REJECTS = """
INSERT INTO tick_rejects (stream, relation, entry_id, row, sqlstate, reason)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[])
"""

ENSURE_PARTITIONS = "SELECT ensure_tick_partitions($1, $2)"

REFRESH_CANDLES = "CALL refresh_candles()"

APPLY_RETENTION = "SELECT apply_retention()"

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

#: seconds since each of these jobs last succeeded (a new maintenance owner resumes their schedule)
SINCE_LAST_SUCCESS = """
SELECT job, extract(epoch FROM now() - last_success)::float8 AS ago
FROM maintenance_runs WHERE job = ANY($1::text[]) AND last_success IS NOT NULL
"""

CANDLE_REFRESH_WINDOWS = """
SELECT extract(epoch FROM window_start)::float8 AS window_start, extract(epoch FROM window_end)::float8 AS window_end
FROM candle_refresh_windows($1::regclass, make_interval(secs => $2), $3, p_changed => $4::tstzmultirange)
"""

REFRESH_CONTINUOUS_AGGREGATE = (
    "CALL refresh_continuous_aggregate($1::regclass, to_timestamp($2::float8), to_timestamp($3::float8), "
    "force => $4::boolean)"
)
