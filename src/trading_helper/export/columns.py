"""The column sets of exported and imported files, one list per kind, and their Arrow types.

Candles (export, and what ``import candles`` reads):

=================  ===========================  ===============================================
column             type                         meaning
=================  ===========================  ===============================================
``instrument``     text                         EXCHANGE:SYMBOL (any reference of
                                                ``instruments/refs.py`` on import)
``interval``       text                         1m 5m 15m 1h 1d
``time``           timestamp with offset        bucket start, ISO 8601 as PostgreSQL writes it
                                                (``2024-03-05 09:15:00+05:30``; IST or UTC as asked)
``open`` ...       float64                      ``open``, ``high``, ``low``, ``close``
``volume``         int64                        traded quantity in the bucket
``open_interest``  int64, may be empty          last open interest of the bucket
``source``         text                         live, broker or partial (``read_candles``)
=================  ===========================  ===============================================

Ticks: ``instrument``, ``time`` (trade time), ``exchange_time`` (the feed's time), ``ltp``,
``last_qty``, ``volume`` (cumulative day volume), ``volume_delta`` (this tick's traded quantity),
``avg_price``, ``open_interest``, ``bid_price``, ``bid_qty``, ``ask_price``, ``ask_qty``,
``received_at``: the columns of ``tick_data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import pyarrow as pa

from trading_helper.storage.sql_export import ZONES, Zone

Kind = Literal["candles", "ticks"]
#: the kinds one can export; an option chain's history (``option_chain_snapshots``, migration 0013
#: of the options work) becomes a third entry here, with its columns and a query in
#: ``storage/sql_export.py``: the source, encoders, CLI and route take any kind listed
KINDS: Final[tuple[Kind, ...]] = ("candles", "ticks")

_TIME, _F64, _I64, _I32, _TEXT = "time", "float64", "int64", "int32", "text"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # one of _TIME, _F64, _I64, _I32, _TEXT


def _cols(spec: str) -> tuple[Column, ...]:
    return tuple(Column(*item.split(":")) for item in spec.split())


COLUMNS: Final[dict[Kind, tuple[Column, ...]]] = {
    "candles": _cols(
        "instrument:text interval:text time:time open:float64 high:float64 low:float64 close:float64 "
        "volume:int64 open_interest:int64 source:text"
    ),
    "ticks": _cols(
        "instrument:text time:time exchange_time:time ltp:float64 last_qty:int32 volume:int64 "
        "volume_delta:int64 avg_price:float64 open_interest:int64 bid_price:float64 bid_qty:int32 "
        "ask_price:float64 ask_qty:int32 received_at:time"
    ),
}


def names(kind: Kind) -> list[str]:
    return [c.name for c in COLUMNS[kind]]


def arrow_type(column: Column, zone: Zone) -> pa.DataType:
    """The column's Arrow type; times are microsecond timestamps in the export's zone."""
    if column.type == _TIME:
        return pa.timestamp("us", tz=ZONES[zone])
    plain: dict[str, pa.DataType] = {
        _F64: pa.float64(),
        _I64: pa.int64(),
        _I32: pa.int32(),
        _TEXT: pa.string(),
    }
    return plain[column.type]


def schema(kind: Kind, zone: Zone) -> pa.Schema:
    """The Arrow (and Parquet) schema of an export; nullable where the database column is."""
    required = {"instrument", "interval", "time", "open", "high", "low", "close", "volume", "source"}
    if kind == "ticks":
        required = {"instrument", "time", "ltp", "volume_delta", "received_at"}
    return pa.schema(
        [pa.field(c.name, arrow_type(c, zone), nullable=c.name not in required) for c in COLUMNS[kind]]
    )
