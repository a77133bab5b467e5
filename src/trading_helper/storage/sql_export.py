"""Named SQL of exports (``trading_helper.export``): each query is the body of a ``COPY (...)
TO STDOUT`` that streams CSV rows in the export's column order (``export/columns.py``).

The time zone of the written times is the session's, set from :data:`ZONES` (a whitelist: never
caller text) for the export's connection and reset after it.
"""

from __future__ import annotations

from typing import Final, Literal

Zone = Literal["ist", "utc"]
#: zone -> the PostgreSQL time zone an export's session writes its times in
ZONES: Final[dict[Zone, str]] = {"ist": "Asia/Kolkata", "utc": "UTC"}
#: the session settings of an export, by zone: times as PostgreSQL writes ISO 8601
#: (``2026-12-01 09:15:00+05:30``, ``2026-12-01 03:45:00.25+00``), which Python, pandas and Arrow
#: read as they are. PostgreSQL's own output of a timestamp costs about two thirds of a to_char()
#: that writes the 'T' and a full UTC offset (measured with COPY of 300,000 rows), and an export's
#: speed is mostly this formatting.
SET_ZONE: Final[dict[Zone, str]] = {
    zone: f"SET TimeZone = '{name}'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 1"
    for zone, name in ZONES.items()
}
RESET_ZONE = "RESET TimeZone; RESET DateStyle; RESET extra_float_digits"

#: $1 instrument text, $2 timeframe, $3 instrument id, $4 from, $5 to: the merged series
#: (``read_candles``) of one instrument, one row per bucket in time order
CANDLES = (
    "SELECT $1::text, $2::text, bucket, open, high, low, close, volume, open_interest, source "
    "FROM read_candles($3::integer, $2::text, $4::timestamptz, $5::timestamptz)"
)

_TICKS = (
    "SELECT $1::text, time, exchange_time, ltp, last_qty, volume, volume_delta, avg_price, open_interest, "
    "bid_price, bid_qty, ask_price, ask_qty, received_at FROM {table} "
    "WHERE instrument_id = $2::integer AND time >= $3::timestamptz AND time < $4::timestamptz {bound} ORDER BY time"
)
#: $1 instrument text, $2 id, $3 from, $4 to: the archived ticks (``tick_archive``, version 13),
#: all older than what ``tick_data`` still holds for the instrument (``archive_progress``)
ARCHIVED_TICKS = _TICKS.format(table="tick_archive", bound="")
#: the same from ``tick_data``: for a future or option only those from the archive's ``upto`` on
TICKS = _TICKS.format(table="tick_data", bound="AND time >= tick_archive_upto($2::integer)")
#: $1 instrument ids: those that may have archived ticks (futures and options)
FO_OF = "SELECT id FROM instruments WHERE id = ANY($1::integer[]) AND is_fo_contract(instrument_type)"

#: an export's COPY may run for minutes: the API pool's statement_timeout is lifted for it (and
#: restored by :data:`RESTORE_TIMEOUT`, as the pool's reset on release would)
NO_TIMEOUT = "SET statement_timeout = 0"
RESTORE_TIMEOUT = "RESET statement_timeout"

#: ``trading-helper bench export``'s synthetic ticks: $1 instrument ids, $2 the UTC day, $3 ticks per
#: instrument that day, spread over the NSE session (03:45-10:00 UTC) with every column filled
SYNTHETIC_TICKS = """
INSERT INTO tick_data (time, instrument_id, ltp, last_qty, volume, volume_delta, avg_price, open_interest,
                       bid_price, bid_qty, ask_price, ask_qty, received_at, exchange_time)
SELECT t, i, p, 1 + k % 50, 1000 * k, 1 + k % 50, p - 0.5, CASE WHEN k % 7 = 0 THEN NULL ELSE 40000 + k END,
       p - 0.05, 10 + k % 90, p + 0.05, 12 + k % 80, t + interval '250 milliseconds', t
FROM unnest($1::integer[]) AS i, generate_series(0, $3::integer - 1) AS k,
     LATERAL (SELECT $2::timestamptz + interval '3 hours 45 minutes' + k * (interval '22500 seconds' / $3::integer) AS t,
                     100 + i % 900 + (k % 200) * 0.05 AS p) AS v
"""
#: the reference of the benchmark: the same rows as the database's plain CSV, untouched
RAW_TICKS = "SELECT * FROM tick_data WHERE instrument_id = $1 AND time >= $2 AND time < $3"
