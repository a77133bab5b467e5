"""The Redis stream between receivers and the database writer: ids, entries and their payloads.

An entry is one received frame: field ``u`` holds its ticks (:mod:`.codec`). An entry with field
``r`` instead says the feed (re)connected: ``r`` holds the instrument ids whose capture started
again, ``a`` the time it started (epoch µs). It reaches the writer in order with the ticks around
it (see :class:`~trading_helper.ingest.batch.VolumeReset` for what the writer does with it).

Entries written before schema version 6 are still read: field ``t`` holds ticks without their
last-trade time, and a reset without ``a`` has no start time.

Every entry also carries field ``q``, its place in the receiver's run: ``run:entry:ticks`` (the
receiver run's id, the entry's number in that run from 1, and the ticks of the run's entries up
to and including this one). The writer keeps the last committed place per run, so an entry that
does not follow it shows entries lost from the stream, and how many ticks they held.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from trading_helper.ingest.batch import Chunk, TickBatch, VolumeReset
from trading_helper.ingest.codec import RECORD, TICK_SIZE, Record, current_payload
from trading_helper.ingest.redisconn import REDIS_FAILURES

TICKS_FIELD = b"u"
LEGACY_TICKS_FIELD = b"t"
RESET_FIELD = b"r"
RESET_AT_FIELD = b"a"
SEQ_FIELD = b"q"
_AT = struct.Struct("<q")


@dataclass(slots=True, frozen=True)
class EntrySeq:
    run: str
    entry_no: int
    #: ticks in the run's entries up to and including this one
    ticks: int

    def encode(self) -> bytes:
        return f"{self.run}:{self.entry_no}:{self.ticks}".encode()


def decode_seq(raw: bytes | None) -> EntrySeq | None:
    if not raw:
        return None
    try:
        run, entry_no, ticks = raw.decode().split(":")
        return EntrySeq(run, int(entry_no), int(ticks))
    except (ValueError, UnicodeDecodeError):
        return None


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
    #: the entry's tick records (today's layout), or its capture start; None when malformed
    chunk: Chunk | None
    malformed: bool = False
    seq: EntrySeq | None = None

    @property
    def ticks(self) -> int:
        """Tick records in the entry (0 for a reset)."""
        return len(self.chunk) // TICK_SIZE if isinstance(self.chunk, bytes) else 0

    @property
    def items(self) -> list[Record | VolumeReset]:
        """The entry's records as tuples (or its reset)."""
        if self.chunk is None:
            return []
        if isinstance(self.chunk, VolumeReset):
            return [self.chunk]
        return list(RECORD.iter_unpack(self.chunk))


def decode_entry(entry_id: bytes | str, fields: dict[bytes, bytes] | None) -> DecodedEntry:
    """A stream entry as tick records (or a reset); a payload that cannot be decoded is marked malformed."""
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if not fields:
        return DecodedEntry(eid, None, malformed=True)
    seq = decode_seq(fields.get(SEQ_FIELD))
    try:
        if TICKS_FIELD in fields or LEGACY_TICKS_FIELD in fields:
            legacy = TICKS_FIELD not in fields
            payload = current_payload(fields[LEGACY_TICKS_FIELD if legacy else TICKS_FIELD], legacy=legacy)
            return DecodedEntry(eid, payload, seq=seq)
        if RESET_FIELD in fields:
            raw = fields[RESET_FIELD]
            if len(raw) % 4:
                raise ValueError("reset ids are not int32s")
            ids = struct.unpack(f"<{len(raw) // 4}i", raw)
            at = fields.get(RESET_AT_FIELD)
            return DecodedEntry(
                eid, VolumeReset(frozenset(ids), None if at is None else _AT.unpack(at)[0]), seq=seq
            )
    except (ValueError, struct.error):
        pass
    return DecodedEntry(eid, None, malformed=True, seq=seq)


class StreamIds:
    """The ids one receiver gives its entries: increasing, after the stream's last id when it
    first asks (offline: after the last id given out, or now), so that re-sending an entry with
    its id never doubles it (:meth:`settle`)."""

    def __init__(self, redis: aioredis.Redis, stream: str) -> None:
        self.redis = redis
        self.stream = stream
        self._id: tuple[int, int] | None = None  # the last stream id given out

    async def next(self) -> str:
        if self._id is None:
            try:
                info = await self.redis.xinfo_stream(self.stream)
                ms, seq = parse_id(info["last-generated-id"])
                self._id = (ms, seq)
            except ResponseError:  # no such stream yet
                self._id = (0, 0)
            except REDIS_FAILURES:
                return self.next_offline()
        return self.next_offline()

    def next_offline(self) -> str:
        """The next id after the last one given out (or after now, before Redis was ever seen)."""
        ms = int(time.time() * 1000)
        last_ms, last_seq = self._id if self._id is not None else (0, 0)
        self._id = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return f"{self._id[0]}-{self._id[1]}"

    async def settle(self, reply: object, entry_id: str, fields: dict[bytes, bytes]) -> str:
        """The id under which the entry is in the stream, given the reply to its XADD.

        Refused as "equal or smaller than the target stream top item": the entry is looked up;
        found with the same content, an earlier try landed (its reply was lost); otherwise
        someone else moved the stream's top, and it is appended under a fresh id after it."""
        if isinstance(reply, ResponseError) and "equal or smaller than the target stream top item" in str(
            reply
        ):
            found = await self.redis.xrange(self.stream, min=entry_id, max=entry_id, count=1)
            if found and found[0][1] == fields:
                return entry_id
            self._id = None
            entry_id = await self.next()
            await self.redis.xadd(self.stream, fields, id=entry_id)  # type: ignore[arg-type]
            return entry_id
        if isinstance(reply, BaseException):
            raise reply
        return entry_id


def stamp_entry_times(batch: TickBatch, chunks: list[Chunk], names: list[str], read_us: int) -> None:
    """Each record's accept time (its entry id's milliseconds) and read time, for :mod:`.lags`."""
    ms = [parse_id(name)[0] * 1000 for name, c in zip(names, chunks, strict=True) if isinstance(c, bytes)]
    counts = [len(c) // TICK_SIZE for c in chunks if isinstance(c, bytes)]
    batch.accepted_us = np.repeat(np.asarray(ms, np.int64), counts)
    batch.read_us = np.full(len(batch.accepted_us), read_us, np.int64)
