"""The Redis stream between receivers and the database writer: ids, entries and their payloads.

An entry is one received frame: field ``t`` holds its ticks (:mod:`.codec`); an entry with field
``r`` instead holds instrument ids whose volume state must be forgotten (the feed reconnected),
so the reset reaches the writer in order with the ticks around it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from trading_helper.ingest.codec import Record, decode_records
from trading_helper.storage.ticks import VolumeReset

TICKS_FIELD = b"t"
RESET_FIELD = b"r"


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def reset_fields(instrument_ids: Iterable[int]) -> dict[bytes, bytes]:
    ids = sorted(instrument_ids)
    return {RESET_FIELD: struct.pack(f"<{len(ids)}i", *ids)}


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
        if RESET_FIELD in fields:
            raw = fields[RESET_FIELD]
            ids = struct.unpack(f"<{len(raw) // 4}i", raw[: len(raw) - len(raw) % 4])
            return DecodedEntry(eid, [VolumeReset(frozenset(ids))])
    except (ValueError, struct.error):
        pass
    return DecodedEntry(eid, [], malformed=True)
