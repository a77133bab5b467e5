"""Named SQL of candles as the code reads and backfills them (``candles/``): the merged read path
``read_candles`` (rows, or the wire JSON built by the database), the gaps ``candle_gaps`` finds,
the broker's history stored with its fetch coverage, and the bulk load of the query benchmark's
dataset. The SQL functions they call are defined by the migrations (``sql/*/``: ``read_candles``
and ``candle_gaps`` first in ``common/0002_candles_read.sql``)."""

from __future__ import annotations

from trading_helper.models import CANDLE_WIRE_FIELDS

# -- the read path (candles/read.py) ----------------------------------------------------------------

READ = (
    "SELECT bucket, open, high, low, close, volume, open_interest, source FROM read_candles($1, $2, $3, $4)"
)

#: each wire field (``models.CANDLE_WIRE_FIELDS``) as SQL over a ``read_candles`` row: the row's
#: column of that name, but the time, which is the bucket in IST (+05:30) as ``Candle.wire`` writes it
_WIRE_SQL = {"time": """to_char(bucket AT TIME ZONE 'Asia/Kolkata', 'YYYY-MM-DD"T"HH24:MI:SS') || '+05:30'"""}

#: the same series as one JSON array of wire candles, built by the database: the API's answer for a
#: day of 1m is ~375 candles, and formatting them in Python costs more than reading them (``trading-helper
#: bench query`` measures both); the keys come from the one list, so the two cannot drift apart
READ_JSON = (
    "SELECT coalesce(json_agg(json_build_object("
    + ", ".join(f"'{name}', {_WIRE_SQL.get(name, name)}" for name in CANDLE_WIRE_FIELDS)
    + ") ORDER BY bucket), '[]')::text FROM read_candles($1, $2, $3, $4)"
)

#: the same two, preferring ``$5`` (``live``: as above; ``broker``: the broker's candle wherever
#: ``broker_candles`` has one; migration 0014)
READ_PREFER = READ.replace("($1, $2, $3, $4)", "($1, $2, $3, $4, $5)")
READ_JSON_PREFER = READ_JSON.replace("($1, $2, $3, $4)", "($1, $2, $3, $4, $5)")

#: the exchange calendar an instrument trades on (market_sessions.calendar)
INSTRUMENT_CALENDAR = "SELECT instrument_calendar($1)"

# -- gaps and backfill (candles/gaps.py, candles/backfill.py) ----------------------------------------

GAPS = "SELECT lower(r) AS lo, upper(r) AS hi FROM candle_gaps($1, $2, $3, $4, $5) AS r"

STORE_BROKER_CANDLES = """
INSERT INTO broker_candles AS b (instrument_id, timeframe, bucket, open, high, low, close, volume,
                                 open_interest, source, fetched_at)
SELECT $1, $2, u.bucket, u.open, u.high, u.low, u.close, u.volume, u.oi, $9, now()
FROM unnest($3::timestamptz[], $4::float8[], $5::float8[], $6::float8[], $7::float8[], $8::bigint[],
            $10::bigint[]) AS u(bucket, open, high, low, close, volume, oi)
ON CONFLICT (instrument_id, timeframe, bucket) DO UPDATE
SET open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, open_interest = excluded.open_interest, source = excluded.source,
    fetched_at = excluded.fetched_at
"""

#: the single flight of a backfill across processes (API replicas): a transaction-level advisory
#: lock on (instrument id $1, timeframe $2), so pgBouncer's transaction pooling keeps it; keyed as
#: the calendar's lock is (a hash collision only serialises two backfills, it never skips one)
TRY_BACKFILL_LOCK = (
    "SELECT pg_try_advisory_xact_lock(hashtext('trading_helper.backfill'), "
    "hashtext($1::integer::text || ':' || $2::text))"
)

RECORD_FETCH = """
INSERT INTO fetch_coverage (instrument_id, timeframe, period, candles, source)
VALUES ($1, $2, tstzrange($3, $4), $5, $6)
"""

#: of the 1m buckets $2 of instrument $1, those inside a trading session of its calendar (the
#: cluster bench's holes outside one have nothing to backfill)
BENCH_BUCKETS_IN_SESSION = (
    "SELECT b FROM unnest($2::timestamptz[]) AS b "
    "WHERE NOT isempty(session_ranges(instrument_calendar($1), tstzrange(b, b + interval '1 minute')))"
)

# -- the query benchmark's dataset (``trading-helper bench query``) ------------------------------

BENCH_FETCH_COVERAGE = (
    "INSERT INTO fetch_coverage (instrument_id, timeframe, period, candles, source) "
    "VALUES ($1, $2, tstzrange($3, $4), 1, 'sim')"
)
BENCH_LIVE_COVERAGE = "INSERT INTO live_coverage (instrument_id, broker, period, open) VALUES ($1, 'sim', tstzrange($2, $3), false)"

# bulk load without the two big indexes, then build them once
DROP_BROKER_CANDLES_PKEY = "ALTER TABLE broker_candles DROP CONSTRAINT broker_candles_pkey"
ADD_BROKER_CANDLES_PKEY = "ALTER TABLE broker_candles ADD CONSTRAINT broker_candles_pkey PRIMARY KEY (instrument_id, timeframe, bucket)"
DROP_MAT_PKEY = "ALTER TABLE candles_1m_mat DROP CONSTRAINT candles_1m_mat_pkey"
ADD_MAT_PKEY = (
    "ALTER TABLE candles_1m_mat ADD CONSTRAINT candles_1m_mat_pkey PRIMARY KEY (instrument_id, bucket)"
)
DROP_MAT_BUCKET_INDEX = "DROP INDEX candles_1m_mat_bucket_idx"
CREATE_MAT_BUCKET_INDEX = "CREATE INDEX candles_1m_mat_bucket_idx ON candles_1m_mat (bucket)"

#: plain PostgreSQL: roll a level up from the one below over a range (the schema's own function)
REBUILD_CANDLES = "SELECT candle_rebuild($1, tstzmultirange(tstzrange($2, $3)))"

ANALYZE = "ANALYZE"
