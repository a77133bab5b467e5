"""The Redis stream between receivers and the database writer: ids, entries and their payloads.

An entry is one received frame: field ``u`` holds its ticks (:mod:`.codec`). An entry with field
``r`` instead says the feed (re)connected: ``r`` holds the instrument ids whose capture started
again, ``a`` the time it started (epoch µs). It reaches the writer in order with the ticks around
it (see :class:`~trading_helper.storage.ticks.VolumeReset` for what the writer does with it).

Entries written before schema version 6 are still read: field ``t`` holds ticks without their
last-trade time, and a reset without ``a`` has no start time.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from trading_helper.ingest.codec import Record, decode_records
from trading_helper.storage.ticks import VolumeReset

TICKS_FIELD = b"u"
LEGACY_TICKS_FIELD = b"t"
RESET_FIELD = b"r"
RESET_AT_FIELD = b"a"
_AT = struct.Struct("<q")


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def reset_fields(instrument_ids: Iterable[int], at_us: int) -> dict[bytes, bytes]:
    """The entry saying that capture of ``instrument_ids`` (re)started at ``at_us``."""
    ids = sorted(instrument_ids)
    return {RESET_FIELD: struct.pack(f"<{len(ids)}i", *ids), RESET_AT_FIELD: _AT.pack(at_us)}


@dataclass(slots=True)
class DecodedEntry:
    entry_id: str
    items: list[Record | VolumeReset]
    malformed: bool = False


def decode_entry(entry_id: bytes | str, fields: dict[bytes, bytes] | None) -> DecodedEntry:
    """A stream entry as tick records (or a reset); a payload that cannot be decoded is marked malformed."""
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if not fields:
        return DecodedEntry(eid, [], malformed=True)
    try:
        if TICKS_FIELD in fields:
            return DecodedEntry(eid, decode_records(fields[TICKS_FIELD]))  # type: ignore[arg-type]
        if LEGACY_TICKS_FIELD in fields:
            return DecodedEntry(eid, decode_records(fields[LEGACY_TICKS_FIELD], legacy=True))  # type: ignore[arg-type]
        if RESET_FIELD in fields:
            raw = fields[RESET_FIELD]
            if len(raw) % 4:
                raise ValueError("reset ids are not int32s")
            ids = struct.unpack(f"<{len(raw) // 4}i", raw)
            at = fields.get(RESET_AT_FIELD)
            return DecodedEntry(eid, [VolumeReset(frozenset(ids), None if at is None else _AT.unpack(at)[0])])
    except (ValueError, struct.error):
        pass
    return DecodedEntry(eid, [], malformed=True)
