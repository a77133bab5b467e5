"""Named SQL of exports (``trading_helper.export``): each query is the body of a ``COPY (...)
TO STDOUT`` that streams CSV rows in the export's column order (``export/columns.py``).

The time zone of the written times is the transaction's, set from :data:`ZONES` (a whitelist: never
caller text) with ``SET LOCAL`` in the export's transaction (no session state: pgBouncer-safe).
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
    zone: f"SET LOCAL TimeZone = '{name}'; SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL extra_float_digits = 1"
    for zone, name in ZONES.items()
}

#: $1 instrument ids, $2 their texts, $3 timeframe, $4 and $5 the windows' starts and ends (one
#: entry per instrument and window, windows in time order): the merged series (``read_candles``) of a
#: batch of instruments in one COPY, in the order of the ids, one row per bucket in time order
CANDLES = """
SELECT l.label, $3::text, c.* FROM (
    SELECT * FROM unnest($1::integer[], $2::text[], $4::timestamptz[], $5::timestamptz[])
        WITH ORDINALITY AS u (id, label, lo, hi, n)
    ORDER BY u.n
) l
CROSS JOIN LATERAL read_candles(l.id, $3::text, l.lo, l.hi) c
ORDER BY l.n, c.bucket
"""

_TICK_COLUMNS = (
    "time, exchange_time, ltp, last_qty, volume, volume_delta, avg_price, open_interest, bid_price, bid_qty, "
    "ask_price, ask_qty, received_at"
)
#: $1 instrument ids, $2 their texts, $3 from, $4 to: the ticks of a batch of instruments in one
#: COPY (a COPY per instrument cost more in its round trips and planning than in its rows), in the
#: order of the ids, each instrument in time order. A future's or option's archived ticks
#: (``tick_archive``, version 13) come first, all older than what ``tick_data`` still holds for it
#: (``tick_archive_upto``, evaluated once per instrument: as an index condition it ran once per
#: partition and cost a third of the export)
TICKS = f"""
SELECT l.label, t.* FROM (
    SELECT u.id, u.label, u.n, is_fo_contract(i.instrument_type) AS fo, tick_archive_upto(u.id) AS upto
    FROM unnest($1::integer[], $2::text[]) WITH ORDINALITY AS u (id, label, n)
    JOIN instruments i ON i.id = u.id
    ORDER BY u.n
) l
CROSS JOIN LATERAL (
    SELECT {_TICK_COLUMNS} FROM tick_archive
    WHERE l.fo AND instrument_id = l.id AND time >= $3::timestamptz AND time < $4::timestamptz
    UNION ALL
    SELECT {_TICK_COLUMNS} FROM tick_data
    WHERE instrument_id = l.id AND time >= $3::timestamptz AND time < $4::timestamptz AND time >= l.upto
) t
ORDER BY l.n, t.time
"""

#: an export's COPY may run for minutes: the API pool's statement_timeout is lifted for it (for
#: its transaction only, as the zone)
NO_TIMEOUT = "SET LOCAL statement_timeout = 0"

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
#: the reference of the benchmark: $1 from, $2 to: the same rows as the database's plain CSV in one
#: COPY, untouched (no instrument text, no order, the session's own time format)
RAW_TICKS = "SELECT * FROM tick_data WHERE time >= $1::timestamptz AND time < $2::timestamptz"
