"""Named SQL of replay (``replay/source.py``): the stored updates of some instruments in one
window, in exchange-time order, and the holes in their live coverage.

A trade (``tick_data``) is selected by its trade time (``time``), an update with no new trade
(``quote_updates``) by its exchange time; both are ordered by ``at``, the exchange time of the
update (the trade time for rows written before version 6, which have none). ``at`` is never
earlier than the column a row is selected by (``greatest``: a feed whose exchange stamp precedes
its trade time is played at the trade time), which is what lets the replay merge consecutive
windows into one ordered stream.
"""

from __future__ import annotations

#: $1 instrument ids, [$2, $3) the window
WINDOW = """
SELECT r.* FROM (
    SELECT true AS trade, instrument_id, greatest(coalesce(exchange_time, time), time) AS at,
           coalesce(exchange_time, time) AS exchange_time, time AS trade_time, received_at, ltp, last_qty,
           volume, avg_price, open_interest, bid_price, bid_qty, ask_price, ask_qty
    FROM tick_data
    WHERE instrument_id = ANY($1::integer[]) AND time >= $2 AND time < $3
    UNION ALL
    SELECT false, instrument_id, time, time, trade_time, received_at, ltp, last_qty,
           volume, avg_price, open_interest, bid_price, bid_qty, ask_price, ask_qty
    FROM quote_updates
    WHERE instrument_id = ANY($1::integer[]) AND time >= $2 AND time < $3
) AS r
ORDER BY r.at, r.instrument_id, r.trade_time
"""

#: the first row at or after $2 (and before $3): where the next non-empty window starts
NEXT_TIME = """
SELECT least(
    (SELECT min(time) FROM tick_data WHERE instrument_id = ANY($1::integer[]) AND time >= $2 AND time < $3),
    (SELECT min(time) FROM quote_updates WHERE instrument_id = ANY($1::integer[]) AND time >= $2 AND time < $3)
)
"""

#: per instrument of $1, the parts of [$2, $3) inside a trading session but not captured live
#: (the coverage tables; the same arithmetic as ``candle_gaps`` before it widens to buckets)
HOLES = """
SELECT i AS instrument_id, lower(h) AS lo, upper(h) AS hi
FROM unnest($1::integer[]) AS i,
     LATERAL unnest(session_ranges(instrument_calendar(i), tstzrange($2, $3))
                    - captured_ranges(i, tstzrange($2, $3))) AS h
ORDER BY lo, instrument_id
"""

#: the calendars of the instruments $1 (to load their sessions first)
CALENDARS = "SELECT DISTINCT instrument_calendar(i) AS calendar FROM unnest($1::integer[]) AS i"
