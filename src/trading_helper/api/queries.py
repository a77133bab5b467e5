"""Named SQL of the API routes (values always bound, never formatted)."""

from __future__ import annotations

from trading_helper.storage.queries import INSTRUMENT_KIND_ORDER

_BROKER_IDS = """coalesce((SELECT jsonb_object_agg(b.broker, b.broker_token) FROM instrument_broker_ids b
                  WHERE b.instrument_id = i.id), '{}'::jsonb) AS broker_ids"""

_COLUMNS = """i.id, i.exchange, i.tradingsymbol, i.name, i.segment, i.instrument_type, i.expiry, i.strike,
i.option_type, i.lot_size, i.tick_size, i.expired"""

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
SELECT {_COLUMNS}, {_BROKER_IDS}
{_FILTER}
ORDER BY CASE WHEN $1::text IS NULL OR i.tradingsymbol = ANY($6::text[]) THEN 0
              WHEN i.tradingsymbol LIKE $1 || '%' THEN 1
              WHEN i.tradingsymbol LIKE '%' || $1 || '%' THEN 2 ELSE 3 END,
         CASE WHEN $1::text IS NULL THEN 0 ELSE 1 END, {INSTRUMENT_KIND_ORDER},
         i.tradingsymbol, i.exchange, i.expiry NULLS FIRST, i.id
LIMIT $7 OFFSET $8
"""

COUNT_INSTRUMENTS = f"SELECT count(*) {_FILTER}"

INSTRUMENT_BY_ID = f"SELECT {_COLUMNS}, {_BROKER_IDS} FROM instruments i WHERE i.id = $1"

SUBSCRIBE = """
INSERT INTO subscriptions (instrument_id) SELECT unnest($1::integer[])
ON CONFLICT (instrument_id) DO NOTHING
"""

UNSUBSCRIBE = "DELETE FROM subscriptions WHERE instrument_id = ANY($1::integer[])"

LIST_SUBSCRIPTIONS = f"""
SELECT {_COLUMNS}, {_BROKER_IDS}, s.mode, s.created_at AS since
FROM subscriptions s JOIN instruments i ON i.id = s.instrument_id
ORDER BY i.tradingsymbol, i.id
"""

COUNT_SUBSCRIPTIONS = "SELECT count(*) FROM subscriptions"


def like_text(text: str) -> str:
    """Search text for LIKE, upper case, with its wildcards escaped (LIKE's default escape is backslash)."""
    return text.upper().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
