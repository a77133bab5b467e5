"""Named SQL of instruments: the master list and its loads, reference lookups, the API's search,
and subscriptions (values always bound, never formatted)."""

from __future__ import annotations

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

BROKER_IDS_OF = (
    "SELECT broker, broker_token, broker_aux_id FROM instrument_broker_ids WHERE instrument_id = $1"
)


# -- the API's search and instrument answers (api/routes/instruments.py) ------------------------

_BROKER_IDS = """coalesce((SELECT jsonb_object_agg(b.broker, b.broker_token) FROM instrument_broker_ids b
                  WHERE b.instrument_id = i.id), '{}'::jsonb) AS broker_ids"""

# $1 search text (LIKE-escaped, upper case) or NULL, $2 exchange, $3 segment, $4 expiry,
# $5 include expired, $6 the symbols the text means exactly (itself, an alias's targets), $7 limit,
# $8 offset. Substring and name matches scan the table: about 100k rows for a full Kite
# master, a few milliseconds; pg_trgm would index them but is not installed everywhere.
_FILTER = """
FROM instruments i
WHERE ($1::text IS NULL OR i.tradingsymbol LIKE '%' || $1 || '%' OR upper(i.name) LIKE '%' || $1 || '%'
       OR i.tradingsymbol = ANY($6::text[]))
  AND ($2::text IS NULL OR i.exchange = $2)
  AND ($3::text IS NULL OR i.segment = $3)
  AND ($4::date IS NULL OR i.expiry = $4)
  AND ($5::boolean OR NOT i.expired)
"""

# exact symbol (or alias), then prefix, then substring, then name; within each, indices and
# near-month futures first; without a search text, by symbol
LIST_INSTRUMENTS = f"""
SELECT {INSTRUMENT_COLUMNS}, {_BROKER_IDS}
{_FILTER}
ORDER BY CASE WHEN $1::text IS NULL OR i.tradingsymbol = ANY($6::text[]) THEN 0
              WHEN i.tradingsymbol LIKE $1 || '%' THEN 1
              WHEN i.tradingsymbol LIKE '%' || $1 || '%' THEN 2 ELSE 3 END,
         CASE WHEN $1::text IS NULL THEN 0 ELSE 1 END, {INSTRUMENT_KIND_ORDER},
         i.tradingsymbol, i.exchange, i.expiry NULLS FIRST, i.id
LIMIT $7 OFFSET $8
"""

COUNT_INSTRUMENTS = f"SELECT count(*) {_FILTER}"

INSTRUMENT_BY_ID = f"SELECT {INSTRUMENT_COLUMNS}, {_BROKER_IDS} FROM instruments i WHERE i.id = $1"

# -- subscriptions (the API writes them, the ingest service reads them on start) ---------------

SUBSCRIBE = """
INSERT INTO subscriptions (instrument_id) SELECT unnest($1::integer[])
ON CONFLICT (instrument_id) DO NOTHING
"""

UNSUBSCRIBE = "DELETE FROM subscriptions WHERE instrument_id = ANY($1::integer[])"

LIST_SUBSCRIPTIONS = f"""
SELECT {INSTRUMENT_COLUMNS}, {_BROKER_IDS}, s.mode, s.created_at AS since
FROM subscriptions s JOIN instruments i ON i.id = s.instrument_id
ORDER BY i.tradingsymbol, i.id
"""

COUNT_SUBSCRIPTIONS = "SELECT count(*) FROM subscriptions"

#: the broker's tokens of every subscribed instrument
SUBSCRIBED_TOKENS = """
SELECT b.broker_token, s.instrument_id FROM subscriptions s
JOIN instrument_broker_ids b ON b.instrument_id = s.instrument_id AND b.broker = $1
"""

#: a digest of SUBSCRIBED_TOKENS (the coordinator plans again only when it changed)
SUBSCRIBED_DIGEST = """
SELECT count(*) || ':' || coalesce(md5(string_agg(b.broker_token || '=' || s.instrument_id, ',' ORDER BY s.instrument_id)), '')
FROM subscriptions s
JOIN instrument_broker_ids b ON b.instrument_id = s.instrument_id AND b.broker = $1
"""

#: the broker's tokens of these instruments
TOKENS_OF = """
SELECT broker_token, instrument_id FROM instrument_broker_ids WHERE broker = $1 AND instrument_id = ANY($2::integer[])
"""


def like_text(text: str) -> str:
    """Search text for LIKE, upper case, with its wildcards escaped (LIKE's default escape is backslash)."""
    return text.upper().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- subscription changes between processes (storage/subscriptions.py) -------------------------

#: the channel of subscription changes; each payload a JSON list of the instruments' ids
SUBSCRIPTIONS_CHANNEL = "subscriptions_changed"
#: $1 the payload; sent in the transaction that changes the set, so it arrives at its commit
NOTIFY_SUBSCRIPTIONS = "SELECT pg_notify('subscriptions_changed', $1::text)"
#: of the instruments $1, those subscribed now
SUBSCRIBED_AMONG = "SELECT instrument_id FROM subscriptions WHERE instrument_id = ANY($1::integer[])"
#: every subscribed instrument
SUBSCRIBED_IDS = "SELECT instrument_id FROM subscriptions"
#: a listening connection's keepalive
PING = "SELECT 1"
