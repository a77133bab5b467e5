"""The receiving side: each frame's ticks become one Redis stream entry, a latest quote per
instrument and one live fan-out message.

When Redis is unreachable, entries wait in a bounded in-memory queue (order kept) and are
flushed first when it returns; beyond that bound, and when the stream is at its cap, ticks are
dropped and counted as ``buffer_full``. Nothing is dropped silently.

Appends are idempotent: the receiver gives every entry its own increasing stream id (starting
after the stream's last id), and a frame is re-sent with the same id. When a connection breaks
after Redis appended an entry but before the reply arrived, the re-send is refused as "equal or
smaller than the target stream top item"; the receiver then looks the id up: found with the same
content, the entry is already there and is not doubled; otherwise (another writer moved the
stream's top, or took that id), it is appended under a fresh id.

Frames are sent in groups: a frame handed at least :data:`SEND_EVERY_S` after the last send
goes out at once (``on_ticks`` returns when it is in Redis, as at low rates); frames handed
sooner wait in an outbox and go out together, in one pipeline, with the next such frame or at
most :data:`SEND_EVERY_S` later (a timer), or at :meth:`TickReceiver.flush`. A Redis round trip
per frame cost more than everything else the receiver does for a frame of 100 ticks (and far more
on a loaded machine, where each round trip waits for Redis to be scheduled).

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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import redis.asyncio as aioredis

from trading_helper import clock
from trading_helper.brokers.base import FeedEvent, FeedState
from trading_helper.ingest import keys, metrics
from trading_helper.ingest.coverage import CoverageRecorder
from trading_helper.ingest.frames import EncodedFrame, encoded
from trading_helper.ingest.redisconn import REDIS_FAILURES
from trading_helper.ingest.stream import SEQ_FIELD, TICKS_FIELD, EntrySeq, StreamIds, reset_fields
from trading_helper.ingest.volume import to_us
from trading_helper.models import Tick

log = logging.getLogger(__name__)

_RETRY_AFTER_S = 1.0
_CAP_WARN_RATIO = 0.8
QUOTES_EVERY_S = 0.1
#: frames handed sooner than this after the last send wait (at most this long) to go out together
SEND_EVERY_S = 0.005
#: entries in one pipeline at most
_GROUP_MAX = 500


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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        #: the clock of the send grouping, the quote writes and the retries (a test's own)
        self._clock = monotonic
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
        #: instrument -> the encoded frame holding its latest tick, and the tick's index in it
        self._latest: dict[int, tuple[EncodedFrame, int]] = {}
        #: data time before which every received frame is in the Redis stream (None: none yet); a
        #: process killed now loses only what came after it, so live coverage never claims more
        self.durable_at: datetime | None = None
        #: the latest exchange time in those frames: it, not the local time, sees a socket read late
        self.durable_data_at: datetime | None = None
        self._handed_data_at: datetime | None = None
        self._appending = 0
        self._flush_lock = asyncio.Lock()
        #: id of the newest entry this receiver appended to the stream
        self.last_id: bytes | str | None = None
        self._quotes_at = 0.0
        self._ids = StreamIds(redis, stream)
        #: this run's id, and the number and tick count of the last entry stamped
        self.run_id = uuid.uuid4().hex[:16]
        self._entries = 0
        self._stamped_ticks = 0
        self._checked_len_at = 0.0
        #: frames accepted while Redis is up, not yet sent (entry id, fields, payload, ticks)
        self._outbox: deque[tuple[str, dict[bytes, bytes], bytes | None, int]] = deque()
        self._outbox_handed: datetime | None = None
        self._last_send = 0.0
        self._kick: asyncio.TimerHandle | None = None
        self._kick_task: asyncio.Task[None] | None = None
        self._kick_error: BaseException | None = None

    # -- FeedSink ---------------------------------------------------------------------------
    async def on_ticks(self, ticks: Sequence[Tick]) -> None:
        handed = clock.now()
        if self._kick_error is not None:  # a timer's send failed unexpectedly: say so here
            error, self._kick_error = self._kick_error, None
            raise error
        if not ticks:  # a heartbeat: every frame before it was handled
            self._settled(handed)
            return
        self._appending += 1
        try:
            await self._on_ticks(ticks, handed)
        finally:
            self._appending -= 1
        self._settled(handed)

    def _settled(self, at: datetime) -> None:
        """Every frame handed to us before ``at`` is in Redis, unless some wait in memory."""
        if not self.local and not self._outbox and not self._appending and self.redis_down_since is None:
            self.durable_at = at
            self.durable_data_at = self._handed_data_at

    def safe_until(self) -> datetime | None:
        """Data time up to which every tick received is in Redis (None before any frame was)."""
        return min((t for t in (self.durable_at, self.durable_data_at) if t is not None), default=None)

    async def _on_ticks(self, ticks: Sequence[Tick], handed: datetime) -> None:
        self.received += len(ticks)
        metrics.TICKS_RECEIVED.inc(len(ticks))
        if not isinstance(ticks, EncodedFrame) and any(_naive(t) for t in ticks):
            good = [t for t in ticks if not _naive(t)]
            self.on_reject("naive_timestamp", len(ticks) - len(good))
            ticks = good
            if not ticks:
                return
        frame = encoded(ticks)  # a parser's frame is encoded already (aware by construction)
        newest = frame.newest()
        self._handed_data_at = max(newest, self._handed_data_at or newest)
        latest = self._latest
        for i, iid in enumerate(frame.instrument_ids):
            latest[iid] = (frame, i)
        await self._append({TICKS_FIELD: frame.payload}, frame.payload, len(frame), handed)

    def _take_quotes(self, force: bool = False) -> dict[str, bytes] | None:
        """Latest quotes changed since the last write, at most every QUOTES_EVERY_S (10 Hz is
        plenty for O(1) reads and saves encoding every tick at high rates)."""
        now = self._clock()
        if not self._latest or (not force and now - self._quotes_at < QUOTES_EVERY_S):
            return None
        self._quotes_at = now
        quotes = {str(iid): frame.quote(i) for iid, (frame, i) in self._latest.items()}
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
            await self._append(reset_fields(event.instrument_ids, to_us(event.at)), None, 0, clock.now())
        if self.coverage is not None:
            await self.coverage.on_event(event, safe_until=self.safe_until())

    # -- Redis ----------------------------------------------------------------------------
    async def _append(
        self, fields: dict[bytes, bytes], payload: bytes | None, n_ticks: int, handed: datetime
    ) -> None:
        now = self._clock()
        if (self.local or self._stream_full) and now >= self._retry_at:
            await self._flush_local()
        entry_id = await self._ids.next() if now >= self._retry_at else self._ids.next_offline()
        if self.local or self._stream_full or now < self._retry_at:
            self._keep_locally(entry_id, fields, payload, n_ticks)
            return
        self._stamp(fields, n_ticks)
        self._outbox.append((entry_id, fields, payload, n_ticks))
        self._outbox_handed = handed
        if len(self._outbox) >= _GROUP_MAX or now - self._last_send >= SEND_EVERY_S:
            await self._send_outbox()
        elif self._kick is None:
            self._kick = asyncio.get_running_loop().call_later(SEND_EVERY_S, self._kick_send)

    def _kick_send(self) -> None:
        """The timer: frames left in the outbox go out (no frame came to take them)."""
        self._kick = None
        if self._outbox and (self._kick_task is None or self._kick_task.done()):
            self._kick_task = asyncio.ensure_future(self._send_outbox())
            self._kick_task.add_done_callback(self._kick_done)

    def _kick_done(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("sending held frames to Redis failed unexpectedly: %s", exc, exc_info=exc)
            self._kick_error = exc

    async def _send_outbox(self) -> None:
        """Send the outbox, oldest first, in pipelines of up to _GROUP_MAX entries (with the
        latest quotes and, every QUOTES_EVERY_S, the stream's length). On a Redis failure what is
        unsent is held (:meth:`_outbox_to_local`)."""
        async with self._flush_lock:
            if self._kick is not None:
                self._kick.cancel()
                self._kick = None
            while self._outbox:
                chunk = [self._outbox[i] for i in range(min(_GROUP_MAX, len(self._outbox)))]
                handed = self._outbox_handed if len(chunk) == len(self._outbox) else None
                now = self._last_send = self._clock()
                quotes = self._take_quotes()
                pipe = self.redis.pipeline(transaction=False)
                for entry_id, fields, payload, _ in chunk:
                    # no MAXLEN: trimming entries the writer has not committed would lose ticks
                    pipe.xadd(self.stream, fields, id=entry_id)  # type: ignore[arg-type]
                    if payload is not None:
                        pipe.publish(self.live_channel, payload)
                if quotes:
                    pipe.hset(self.quotes_key, mapping=quotes)  # type: ignore[arg-type]
                check_len = now - self._checked_len_at >= QUOTES_EVERY_S
                if check_len:
                    pipe.xlen(self.stream)
                try:
                    results = await pipe.execute(raise_on_error=False)
                    replies = iter(results)
                    for item in chunk:
                        self.last_id = await self._ids.settle(next(replies), item[0], item[1])
                        if item[2] is not None:
                            next(replies)
                        if self._outbox and self._outbox[0] is item:
                            self._outbox.popleft()
                except REDIS_FAILURES as exc:
                    self._redis_failed(exc)
                    self._outbox_to_local()
                    return
                self._redis_back()
                if check_len:
                    self._checked_len_at = now
                    self._check_cap(int(results[-1]))
                if handed is not None:
                    self._settled(handed)

    def _outbox_to_local(self) -> None:
        """Unsent frames join the held ones (they are older than any frame held after them);
        beyond the bound the newest are dropped and counted, their places in the run given back."""
        while self._outbox:
            entry_id, fields, payload, n_ticks = self._outbox.popleft()
            if len(self.local) < self.local_max_frames:
                self.local.append((entry_id, fields, payload))
                continue
            dropped = [(n_ticks, payload)] + [(o[3], o[2]) for o in self._outbox]
            self._outbox.clear()
            for n, _ in dropped:
                self.on_reject("buffer_full", max(n, 1))
                self._entries -= 1
                self._stamped_ticks -= n
        metrics.FRAMES_BUFFERED_LOCALLY.set(len(self.local))

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
        self._outbox_to_local()  # frames waiting to be sent are older: they keep their place
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
        """Send the frames waiting in the outbox, those held while Redis was away, and pending
        quotes (the service calls this every second, so a quiet feed does not keep them back). With nothing held back, every
        frame handed over so far is in Redis: that moves :attr:`durable_at` on a quiet feed too."""
        handed = clock.now()
        if self._outbox:
            await self._send_outbox()
        if (self.local or self._stream_full) and self._clock() >= self._retry_at:
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
                    self._retry_at = self._clock() + _RETRY_AFTER_S
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
                    settled = await self._ids.settle(next(results), entry_id, fields)
                    if payload is not None:
                        next(results)
                    self.local.popleft()
                    self.last_id = settled
                metrics.FRAMES_BUFFERED_LOCALLY.set(len(self.local))
            self._redis_back()
        except REDIS_FAILURES as exc:
            self._redis_failed(exc)

    def _redis_failed(self, exc: BaseException) -> None:
        self._retry_at = self._clock() + _RETRY_AFTER_S
        if self.redis_down_since is None:
            self.redis_down_since = self._clock()
            log.error(
                "Redis unreachable (%s): holding frames in memory (at most %d)", exc, self.local_max_frames
            )

    def _redis_back(self) -> None:
        if self.redis_down_since is not None:
            log.warning("Redis reachable again after %.1f s", self._clock() - self.redis_down_since)
            self.redis_down_since = None

    def _check_cap(self, length: int) -> None:
        ratio = length / self.max_entries
        metrics.STREAM_LENGTH.set(length)
        metrics.STREAM_FILL_RATIO.set(ratio)
        self._stream_full = length >= self.max_entries
        if ratio >= _CAP_WARN_RATIO and self._clock() - self._last_warning > 10:
            self._last_warning = self._clock()
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
