"""Named SQL of exports (``trading_helper.export``): each statement is the body of a ``COPY (...)
TO STDOUT`` that streams CSV rows in the export's column order (``export/columns.py``).

The time zone of the written times is chosen from :data:`ZONES` (a whitelist: never caller text);
times are written as ISO 8601 with their offset, the way the API writes them.
"""

from __future__ import annotations

from typing import Final, Literal

Zone = Literal["ist", "utc"]
#: zone -> (PostgreSQL zone name, the offset written after the time)
ZONES: Final[dict[Zone, tuple[str, str]]] = {"ist": ("Asia/Kolkata", "+05:30"), "utc": ("UTC", "+00:00")}


def _time(column: str, zone: Zone, *, fraction: bool) -> str:
    name, offset = ZONES[zone]
    pattern = 'YYYY-MM-DD"T"HH24:MI:SS' + (".US" if fraction else "")
    return f"to_char({column} AT TIME ZONE '{name}', '{pattern}') || '{offset}'"


def candles_query(zone: Zone) -> str:
    """$1 instrument text, $2 timeframe, $3 instrument id, $4 from, $5 to: the merged series
    (``read_candles``) of one instrument, one row per bucket in time order."""
    return (
        f"SELECT $1::text, $2::text, {_time('bucket', zone, fraction=False)}, open, high, low, close, "
        "volume, open_interest, source FROM read_candles($3::integer, $2::text, $4::timestamptz, $5::timestamptz)"
    )


_TICK_COLUMNS = (
    "ltp, last_qty, volume, volume_delta, avg_price, open_interest, bid_price, bid_qty, ask_price, ask_qty"
)


def _ticks(table: str, zone: Zone, bound: str) -> str:
    return (
        f"SELECT $1::text, {_time('time', zone, fraction=True)}, {_time('exchange_time', zone, fraction=True)}, "
        f"{_TICK_COLUMNS}, {_time('received_at', zone, fraction=True)} FROM {table} "
        f"WHERE instrument_id = $2::integer AND time >= $3::timestamptz AND time < $4::timestamptz {bound} "
        "ORDER BY time"
    )


def archived_ticks_query(zone: Zone) -> str:
    """$1 instrument text, $2 id, $3 from, $4 to: the archived ticks (``tick_archive``, version 16),
    all older than what ``tick_data`` still holds for the instrument (``archive_progress``)."""
    return _ticks("tick_archive", zone, "")


def ticks_query(zone: Zone) -> str:
    """$1 instrument text, $2 id, $3 from, $4 to: the ticks of ``tick_data`` not archived yet (for a
    future or option, those from the archive's ``upto`` on), in time order."""
    return _ticks("tick_data", zone, "AND time >= tick_archive_upto($2::integer)")


#: an export's COPY may run for minutes: the API pool's statement_timeout is lifted for it (and
#: restored by :data:`RESTORE_TIMEOUT`, as the pool's reset on release would)
NO_TIMEOUT = "SET statement_timeout = 0"
RESTORE_TIMEOUT = "RESET statement_timeout"
