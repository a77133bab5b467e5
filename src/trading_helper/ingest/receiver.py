"""The receiving side: each frame's ticks become one Redis stream entry, a latest quote per
instrument and one live fan-out message, in one round trip.

When Redis is unreachable, entries wait in a bounded in-memory queue (order kept) and are
flushed first when it returns; beyond that bound, and when the stream is at its cap, ticks are
dropped and counted as ``buffer_full``. Nothing is dropped silently.

Appends are idempotent: the receiver gives every entry its own increasing stream id (starting
after the stream's last id), and a frame is re-sent with the same id. When a connection breaks
after Redis appended an entry but before the reply arrived, the re-send is refused as "equal or
smaller than the target stream top item"; the receiver then looks the id up: found with the same
content, the entry is already there and is not doubled; otherwise (another writer moved the
stream's top, or took that id), it is appended under a fresh id.

Each entry is stamped with its place in this receiver's run (:class:`~.stream.EntrySeq`) when it
is accepted (sent or held), so the writer can tell entries lost from the stream from entries
never made (those are counted here, as ``buffer_full``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from trading_helper import clock
from trading_helper.brokers.base import FeedEvent, FeedState
from trading_helper.ingest import keys, metrics
from trading_helper.ingest.codec import TICK_SIZE, encode_ticks, quote_value
from trading_helper.ingest.coverage import CoverageRecorder
from trading_helper.ingest.redisconn import REDIS_FAILURES
from trading_helper.ingest.stream import SEQ_FIELD, TICKS_FIELD, EntrySeq, reset_fields
from trading_helper.ingest.volume import to_us
from trading_helper.models import Tick

log = logging.getLogger(__name__)

_RETRY_AFTER_S = 1.0
_CAP_WARN_RATIO = 0.8
QUOTES_EVERY_S = 0.1


def _naive(t: Tick) -> bool:
    return (
        t.exchange_ts.tzinfo is None
        or t.received_ts.tzinfo is None
        or (t.trade_ts is not None and t.trade_ts.tzinfo is None)
    )


class TickReceiver:
    """Implements :class:`trading_helper.brokers.base.FeedSink`."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        stream: str,
        max_entries: int,
        local_max_frames: int,
        coverage: CoverageRecorder | None = None,
        quotes_key: str = keys.QUOTES,
        live_channel: str = keys.LIVE_CHANNEL,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.quotes_key = quotes_key
        self.live_channel = live_channel
        self.max_entries = max_entries
        self.local: deque[tuple[str, dict[bytes, bytes], bytes | None]] = deque()
        self.local_max_frames = local_max_frames
        self.coverage = coverage
        self.received = 0
        self.rejected: Counter[str] = Counter()
        self.redis_down_since: float | None = None
        self._retry_at = 0.0
        self._stream_full = False
        self._last_warning = 0.0
        self.feed_state: FeedState = FeedState.STOPPED
        #: instrument -> its latest tick, the payload holding its record and the record's index
        self._latest: dict[int, tuple[Tick, bytes, int]] = {}
        #: data time before which every received frame is in the Redis stream (None: none yet); a
        #: process killed now loses only what came after it, so live coverage never claims more
        self.durable_at: datetime | None = None
        self._appending = 0
        self._flush_lock = asyncio.Lock()
        #: id of the newest entry this receiver appended to the stream
        self.last_id: bytes | str | None = None
        self._quotes_at = 0.0
        self._id: tuple[int, int] | None = None  # the last stream id given out
        #: this run's id, and the number and tick count of the last entry stamped
        self.run_id = uuid.uuid4().hex[:16]
        self._entries = 0
        self._stamped_ticks = 0
        self._checked_len_at = 0.0

    # -- FeedSink ---------------------------------------------------------------------------
    async def on_ticks(self, ticks: Sequence[Tick]) -> None:
        handed = clock.now()
        if not ticks:  # a heartbeat: every frame before it was handled
            self._settled(handed)
            return
        self._appending += 1
        try:
            await self._on_ticks(ticks)
        finally:
            self._appending -= 1
        self._settled(handed)

    def _settled(self, at: datetime) -> None:
        """Every frame handed to us before ``at`` is in Redis, unless some wait in memory."""
        if not self.local and not self._appending and self.redis_down_since is None:
            self.durable_at = at

    async def _on_ticks(self, ticks: Sequence[Tick]) -> None:
        self.received += len(ticks)
        metrics.TICKS_RECEIVED.inc(len(ticks))
        if any(_naive(t) for t in ticks):
            good = [t for t in ticks if not _naive(t)]
            self.on_reject("naive_timestamp", len(ticks) - len(good))
            ticks = good
            if not ticks:
                return
        payload = encode_ticks(ticks)
        latest = self._latest
        for i, t in enumerate(ticks):
            latest[t.instrument_id] = (t, payload, i)
        await self._append({TICKS_FIELD: payload}, payload, self._take_quotes(), len(ticks))

    def _take_quotes(self, force: bool = False) -> dict[str, bytes] | None:
        """Latest quotes changed since the last write, at most every QUOTES_EVERY_S (10 Hz is
        plenty for O(1) reads and saves encoding every tick at high rates)."""
        now = time.monotonic()
        if not self._latest or (not force and now - self._quotes_at < QUOTES_EVERY_S):
            return None
        self._quotes_at = now
        size = TICK_SIZE
        quotes = {
            str(iid): quote_value(payload[i * size : (i + 1) * size], t)
            for iid, (t, payload, i) in self._latest.items()
        }
        self._latest = {}
        return quotes

    def on_reject(self, reason: str, count: int = 1) -> None:
        self.rejected[reason] += count
        metrics.TICKS_REJECTED.labels(reason).inc(count)

    async def on_event(self, event: FeedEvent) -> None:
        self.feed_state = event.state
        metrics.FEED_STATE.set(1 if event.state == FeedState.CONNECTED else 0)
        if event.state == FeedState.CONNECTED and event.instrument_ids and event.at.tzinfo is not None:
            # tells the writer when capture (re)started: a snapshot of an older trade is no new trade
            await self._append(reset_fields(event.instrument_ids, to_us(event.at)), None, None, 0)
        if self.coverage is not None:
            await self.coverage.on_event(event)

    # -- Redis ----------------------------------------------------------------------------
    async def _append(
        self, fields: dict[bytes, bytes], payload: bytes | None, quotes: dict[str, bytes] | None, n_ticks: int
    ) -> None:
        now = time.monotonic()
        if (self.local or self._stream_full) and now >= self._retry_at:
            await self._flush_local()
        entry_id = await self._next_id() if now >= self._retry_at else self._next_id_offline()
        if self.local or self._stream_full or now < self._retry_at:
            self._keep_locally(entry_id, fields, payload, n_ticks)
            return
        self._stamp(fields, n_ticks)
        pipe = self.redis.pipeline(transaction=False)
        # no MAXLEN: trimming entries the writer has not committed would lose ticks
        pipe.xadd(self.stream, fields, id=entry_id)  # type: ignore[arg-type]
        if quotes:
            pipe.hset(self.quotes_key, mapping=quotes)  # type: ignore[arg-type]
        if payload is not None:
            pipe.publish(self.live_channel, payload)
        check_len = now - self._checked_len_at >= QUOTES_EVERY_S
        if check_len:
            pipe.xlen(self.stream)
        try:
            results = await pipe.execute(raise_on_error=False)
            entry_id = await self._settle(results[0], entry_id, fields)
        except REDIS_FAILURES as exc:
            self._redis_failed(exc)
            self._keep_locally(entry_id, fields, payload, n_ticks, stamped=True)
            return
        self._redis_back()
        self.last_id = entry_id
        if check_len:
            self._checked_len_at = now
            self._check_cap(int(results[-1]))

    async def _settle(self, reply: object, entry_id: str, fields: dict[bytes, bytes]) -> str:
        """The id under which the entry is in the stream, given the reply to its XADD."""
        if isinstance(reply, ResponseError) and "equal or smaller than the target stream top item" in str(
            reply
        ):
            found = await self.redis.xrange(self.stream, min=entry_id, max=entry_id, count=1)
            if found and found[0][1] == fields:
                return entry_id  # an earlier try landed; its reply was lost
            self._id = None  # someone else moved the stream's top: continue after it
            entry_id = await self._next_id()
            await self.redis.xadd(self.stream, fields, id=entry_id)  # type: ignore[arg-type]
            return entry_id
        if isinstance(reply, BaseException):
            raise reply
        return entry_id

    async def _next_id(self) -> str:
        if self._id is None:
            try:
                info = await self.redis.xinfo_stream(self.stream)
                last = info["last-generated-id"]
                text = last.decode() if isinstance(last, bytes) else str(last)
                ms, _, seq = text.partition("-")
                self._id = (int(ms), int(seq))
            except ResponseError:  # no such stream yet
                self._id = (0, 0)
            except REDIS_FAILURES:
                return self._next_id_offline()
        return self._next_id_offline()

    def _next_id_offline(self) -> str:
        """The next id after the last one given out (or after now, before Redis was ever seen)."""
        ms = int(time.time() * 1000)
        last_ms, last_seq = self._id if self._id is not None else (0, 0)
        self._id = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return f"{self._id[0]}-{self._id[1]}"

    def _stamp(self, fields: dict[bytes, bytes], n_ticks: int) -> None:
        self._entries += 1
        self._stamped_ticks += n_ticks
        fields[SEQ_FIELD] = EntrySeq(self.run_id, self._entries, self._stamped_ticks).encode()

    def _keep_locally(
        self,
        entry_id: str,
        fields: dict[bytes, bytes],
        payload: bytes | None,
        n_ticks: int,
        *,
        stamped: bool = False,
    ) -> None:
        if len(self.local) >= self.local_max_frames:
            self.on_reject("buffer_full", max(n_ticks, 1))
            if stamped:  # the last entry stamped: its place is given to the next one, so no gap shows
                self._entries -= 1
                self._stamped_ticks -= n_ticks
            return
        if not stamped:
            self._stamp(fields, n_ticks)
        self.local.append((entry_id, fields, payload))
        metrics.FRAMES_BUFFERED_LOCALLY.set(len(self.local))

    async def flush(self) -> None:
        """Send frames held while Redis was away and pending quotes (the service calls this
        every second, so a quiet feed does not keep them back). With nothing held back, every
        frame handed over so far is in Redis: that moves :attr:`durable_at` on a quiet feed too."""
        handed = clock.now()
        if (self.local or self._stream_full) and time.monotonic() >= self._retry_at:
            await self._flush_local()
        self._settled(handed)
        if self._latest and not self.local and self.redis_down_since is None:
            quotes = self._take_quotes(force=True)
            try:
                await self.redis.hset(self.quotes_key, mapping=quotes)  # type: ignore[arg-type]
            except REDIS_FAILURES as exc:
                self._redis_failed(exc)

    async def _flush_local(self) -> None:
        """Move locally held entries to the stream, oldest first, while Redis takes them.

        One flush at a time: the housekeeping's :meth:`flush` and a frame's append both call this,
        and two flushes sending the same chunk would each pop it from the queue, dropping the
        next chunk unsent (seen by the soak as ticks lost after a Redis restart)."""
        async with self._flush_lock:
            await self._flush_local_locked()

    async def _flush_local_locked(self) -> None:
        try:
            if self._stream_full:
                self._check_cap(int(await self.redis.xlen(self.stream)))
                if self._stream_full:
                    self._retry_at = time.monotonic() + _RETRY_AFTER_S
                    return
            while self.local:
                chunk = [self.local[i] for i in range(min(500, len(self.local)))]
                pipe = self.redis.pipeline(transaction=False)
                for entry_id, fields, payload in chunk:
                    pipe.xadd(self.stream, fields, id=entry_id)  # type: ignore[arg-type]
                    if payload is not None:
                        pipe.publish(self.live_channel, payload)
                results = iter(await pipe.execute(raise_on_error=False))
                for entry_id, fields, payload in chunk:
                    settled = await self._settle(next(results), entry_id, fields)
                    if payload is not None:
                        next(results)
                    self.local.popleft()
                    self.last_id = settled
                metrics.FRAMES_BUFFERED_LOCALLY.set(len(self.local))
            self._redis_back()
        except REDIS_FAILURES as exc:
            self._redis_failed(exc)

    def _redis_failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + _RETRY_AFTER_S
        if self.redis_down_since is None:
            self.redis_down_since = time.monotonic()
            log.error(
                "Redis unreachable (%s): holding frames in memory (at most %d)", exc, self.local_max_frames
            )

    def _redis_back(self) -> None:
        if self.redis_down_since is not None:
            log.warning("Redis reachable again after %.1f s", time.monotonic() - self.redis_down_since)
            self.redis_down_since = None

    def _check_cap(self, length: int) -> None:
        ratio = length / self.max_entries
        metrics.STREAM_LENGTH.set(length)
        metrics.STREAM_FILL_RATIO.set(ratio)
        self._stream_full = length >= self.max_entries
        if ratio >= _CAP_WARN_RATIO and time.monotonic() - self._last_warning > 10:
            self._last_warning = time.monotonic()
            log.warning(
                "tick stream %s holds %d entries (%.0f%% of its cap): is the database writer keeping up?",
                self.stream,
                length,
                ratio * 100,
            )

    def status(self) -> dict[str, object]:
        return {
            "received": self.received,
            "rejected": dict(self.rejected),
            "local_queue_frames": len(self.local),
            "redis_down": self.redis_down_since is not None,
            "stream_full": self._stream_full,
            "feed_state": str(self.feed_state),
            "at": datetime.now(UTC).isoformat(),
        }
