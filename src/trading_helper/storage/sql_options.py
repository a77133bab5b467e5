"""Named SQL of option chains: contracts and expiries from the instrument master, the chains
followed, and the minute snapshots (values always bound, never formatted; the series' metric
column comes from the :data:`SERIES` whitelist)."""

from __future__ import annotations

from typing import Final

# $1 the derivatives' name (NIFTY, RELIANCE), $2 their exchanges, $3 the expiry
OPTION_CONTRACTS = """
SELECT i.id, i.exchange, i.tradingsymbol, i.strike, i.option_type
FROM instruments i
WHERE i.name = $1 AND i.exchange = ANY($2::text[]) AND i.expiry = $3
  AND i.option_type IN ('CE', 'PE') AND i.strike IS NOT NULL
ORDER BY i.strike, i.option_type
"""

# $1 name, $2 exchanges, $3 the first expiry wanted (today: expired contracts stay listed)
EXPIRIES = """
SELECT i.expiry, count(*) FILTER (WHERE i.option_type = 'CE') AS calls,
       count(*) FILTER (WHERE i.option_type = 'PE') AS puts, min(i.strike) AS min_strike,
       max(i.strike) AS max_strike
FROM instruments i
WHERE i.name = $1 AND i.exchange = ANY($2::text[]) AND i.option_type IN ('CE', 'PE')
  AND i.expiry >= $3
GROUP BY i.expiry ORDER BY i.expiry
"""

# the future the chain falls back on when parity cannot be formed: the first expiring on or after
# the options' expiry (the same contract month), else the last one before
FUTURE_FOR_EXPIRY = """
SELECT i.id, i.tradingsymbol FROM instruments i
WHERE i.name = $1 AND i.exchange = ANY($2::text[]) AND i.instrument_type = 'FUT' AND i.expiry IS NOT NULL
ORDER BY i.expiry < $3, CASE WHEN i.expiry >= $3 THEN i.expiry - $3 ELSE $3 - i.expiry END
LIMIT 1
"""

# -- the chains followed (POST /api/options/subscribe) ------------------------------------------

UPSERT_FOLLOW = """
INSERT INTO option_chain_follows (underlying_id, expiry, strikes, subscribed) VALUES ($1, $2, $3, $4)
ON CONFLICT (underlying_id, expiry) DO UPDATE
SET strikes = excluded.strikes,
    subscribed = ARRAY(SELECT DISTINCT unnest(option_chain_follows.subscribed || excluded.subscribed))
"""

SET_FOLLOW_SUBSCRIBED = (
    "UPDATE option_chain_follows SET subscribed = $3 WHERE underlying_id = $1 AND expiry = $2"
)

# followed chains whose expiry has not passed
LIST_FOLLOWS = """
SELECT f.underlying_id, f.expiry, f.strikes, f.subscribed FROM option_chain_follows f
WHERE f.expiry >= $1 ORDER BY f.underlying_id, f.expiry
"""

# -- snapshots ---------------------------------------------------------------------------------

ENSURE_PARTITIONS = "SELECT ensure_option_partitions($1, $2)"
PRUNE_SNAPSHOTS = "SELECT prune_option_snapshots()"

CHAIN_COLUMNS: Final = (
    "as_of",
    "underlying_id",
    "expiry",
    "spot",
    "forward",
    "forward_source",
    "rate",
    "time_to_expiry_years",
    "atm_strike",
    "pcr_oi",
    "pcr_volume",
    "max_pain",
    "atm_iv",
    "straddle",
    "future_id",
    "future_instrument",
    "future_ltp",
    "future_oi",
    "future_oi_change",
    "future_buildup",
)
#: the future's columns of a chain snapshot -> its key in the chain document's ``future``
FUTURE_COLUMNS: Final = {
    "future_id": "instrument_id",
    "future_instrument": "instrument",
    "future_ltp": "ltp",
    "future_oi": "oi",
    "future_oi_change": "oi_change",
    "future_buildup": "buildup",
}
#: the contract rows' columns and their types (the unnest of the insert casts by them)
QUOTE_TYPES: Final = {
    "as_of": "timestamptz",
    "underlying_id": "integer",
    "expiry": "date",
    "instrument_id": "integer",
    "tradingsymbol": "text",
    "strike": "float8",
    "option_type": "text",
    "ltp": "float8",
    "bid": "float8",
    "ask": "float8",
    "iv_price": "float8",
    "oi": "bigint",
    "oi_change": "bigint",
    "volume": "bigint",
    "iv": "float8",
    "iv_reason": "text",
    "delta": "float8",
    "gamma": "float8",
    "theta": "float8",
    "vega": "float8",
    "buildup": "text",
}
QUOTE_COLUMNS: Final = tuple(QUOTE_TYPES)

# a snapshot is written once per chain and minute; a second write of the same minute (a restart)
# keeps the first
INSERT_CHAIN_SNAPSHOT = f"""
INSERT INTO option_chain_snapshots ({", ".join(CHAIN_COLUMNS)})
VALUES ({", ".join(f"${i + 1}" for i in range(len(CHAIN_COLUMNS)))})
ON CONFLICT DO NOTHING
"""

INSERT_QUOTE_SNAPSHOTS = f"""
INSERT INTO option_quote_snapshots ({", ".join(QUOTE_COLUMNS)})
SELECT * FROM unnest({", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(QUOTE_TYPES.values()))})
ON CONFLICT DO NOTHING
"""

# $1 underlying, $2 expiry, $3 the moment asked: the last snapshot at or before it
CHAIN_SNAPSHOT_AT = f"""
SELECT {", ".join(CHAIN_COLUMNS)} FROM option_chain_snapshots
WHERE underlying_id = $1 AND expiry = $2 AND as_of <= $3
ORDER BY as_of DESC LIMIT 1
"""

# the first snapshot of a window (the baseline of OI change and build-up): $3 from, $4 to
FIRST_SNAPSHOT_IN = """
SELECT as_of, future_id, future_ltp, future_oi FROM option_chain_snapshots
WHERE underlying_id = $1 AND expiry = $2 AND as_of >= $3 AND as_of <= $4
ORDER BY as_of LIMIT 1
"""

QUOTE_SNAPSHOTS_AT = f"""
SELECT {", ".join(QUOTE_COLUMNS)} FROM option_quote_snapshots
WHERE underlying_id = $1 AND expiry = $2 AND as_of = $3
ORDER BY strike, option_type
"""

#: metric -> its column in option_chain_snapshots (the whitelist of /api/options/series)
SERIES: Final = {
    "atm_iv": "atm_iv",
    "pcr_oi": "pcr_oi",
    "pcr_volume": "pcr_volume",
    "max_pain": "max_pain",
    "straddle": "straddle",
    "forward": "forward",
}

SERIES_SQL: Final = {
    metric: f"""
SELECT as_of, {column} AS value FROM option_chain_snapshots
WHERE underlying_id = $1 AND expiry = $2 AND as_of >= $3 AND as_of < $4
ORDER BY as_of LIMIT $5
"""
    for metric, column in SERIES.items()
}
