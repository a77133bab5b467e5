"""The alerts of a running server: two supervised tasks around the pure :class:`Engine`.

- ``alerts`` listens to the live channel (``th:live``, one message per received frame), hands each
  frame's ticks to the engine, and every 0.25 s without a frame lets the clock close candles.
  It reads the channel only while some rule follows an instrument (a rule made while none did
  is answered once the ticks are read; one announced by another replica starts with the ticks
  sent after this one subscribed).
- ``alert-delivery`` delivers each trigger on each of its rule's channels (``delivery.deliver``:
  retries, every attempt recorded) while it stores it once (its idempotency key is unique; its id
  reserved ahead, so the commit is not on the path from tick to receiver), and tells the WebSocket
  clients once it is stored. On start it takes up the triggers of the last day that are not
  delivered yet, so a restart does not lose one (at least once; receivers drop repeats by the key).

Rules are loaded from the database at start and again one by one when the API changes one
(:meth:`AlertService.reload`). A candle rule's studies are warmed up on the merged candle series
(the candle service, broker history included) before the current bucket; ``change_pct`` uses the
last daily candle before today.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge

from trading_helper import clock
from trading_helper.alerts.delivery import AttemptLog, Outcome, Sender, deliver
from trading_helper.alerts.engine import Engine, Trigger
from trading_helper.alerts.rules import Channel, Rule, rule_of
from trading_helper.brokers.retry import backoff_delay
from trading_helper.candles.service import CandleService
from trading_helper.config import Settings
from trading_helper.errors import TradingHelperError, should_retry
from trading_helper.indicators.series import warmup_span
from trading_helper.ingest import codec, keys
from trading_helper.ingest.redisconn import REDIS_FAILURES, redis_errors
from trading_helper.storage import sql_alerts
from trading_helper.storage.db import db_errors
from trading_helper.timeframes import Timeframe

log = logging.getLogger(__name__)

TRIGGERS = Counter("th_alert_triggers_total", "Alert triggers stored (each once)")
RULES = Gauge("th_alert_rules", "Alert rules the engine follows")
BAD_FRAMES = Counter("th_alert_bad_frames_total", "Live-channel messages the alerts could not decode")

IDLE_S = 0.25
#: a rule change made here waits at most this long for the ticks to be read before it is answered
TICKS_WAIT_S = 2.0
MAX_PARALLEL_DELIVERIES = 32
#: trigger ids reserved at a time (one round trip per this many triggers)
RESERVE_IDS = 64
WEBHOOK_TIMEOUT_S = 10.0
T = TypeVar("T")


class AlertService:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        candles: CandleService | None,
        *,
        channel: str = keys.LIVE_CHANNEL,
        publish: Callable[[dict[str, object]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.candles = candles
        self.channel = channel
        #: rule changes made through any API process (:meth:`changed`), for the one evaluating
        self.rules_channel = f"{channel}:rules"
        self._me = uuid.uuid4().hex[:12]
        self.publish = publish
        self.engine = Engine()
        self.queue: asyncio.Queue[Trigger] = asyncio.Queue()
        self.listening = asyncio.Event()
        #: the live channel's ticks are read (only while some rule follows an instrument: at
        #: 12,000 instruments reading the whole feed costs about 3 µs of CPU per tick)
        self.reading_ticks = asyncio.Event()
        self._deliveries: set[asyncio.Task[Any]] = set()
        self._slots = asyncio.Semaphore(MAX_PARALLEL_DELIVERIES)
        self._http: aiohttp.ClientSession | None = None
        self._ids: deque[int] = deque()  # reserved trigger ids
        self._reserving = asyncio.Lock()
        self._refill: asyncio.Task[None] | None = None
        self._bot: Any = None  # telegram.Bot, once a Telegram alert is sent

    # -- rules --------------------------------------------------------------------------------
    async def load(self) -> None:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(sql_alerts.LIVE_RULES)
        self.engine = Engine(prev_close=self.engine.prev_close)
        for row in rows:
            await self._follow(row)
        RULES.set(len(self.engine.rules))

    async def reload(self, rule_id: int) -> None:
        """The API changed rule ``rule_id``: follow it as it is now (or no more)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(sql_alerts.GET_RULE, rule_id)
        if row is None or not row["enabled"]:
            self.engine.remove(rule_id)
        else:
            await self._follow(row)
        RULES.set(len(self.engine.rules))

    async def changed(self, rule_id: int) -> None:
        """The API changed rule ``rule_id`` in this process: reloaded here when this process
        evaluates the alerts, and announced to the one that does (api/singletons.py: one API
        replica at a time). An announcement Redis refuses is lost, but so is the evaluating
        replica's subscription: its ``alerts`` task restarts and loads every rule again."""
        if self.listening.is_set():
            await self.reload(rule_id)
            if self.engine.followed:  # ticks sent after the answer are evaluated
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICKS_WAIT_S):
                        await self.reading_ticks.wait()
        try:
            await self.redis.publish(self.rules_channel, f"{self._me}:{rule_id}")
        except REDIS_FAILURES as exc:
            log.warning("alerts: rule %d changed, but Redis refused to announce it (%s)", rule_id, exc)

    async def _announced(self, data: bytes) -> None:
        sender, _, rule_id = data.decode(errors="replace").partition(":")
        if sender != self._me and rule_id.isdigit():  # our own changes are reloaded already
            with db_errors("alerts: reloading a changed rule"):
                await self.reload(int(rule_id))

    async def _follow(self, row: asyncpg.Record) -> None:
        try:
            rule = rule_of(row)
        except TradingHelperError as exc:  # stored by an older version with other rules
            log.error("alert rule %d cannot be evaluated any more: %s", row["id"], exc)
            return
        history = await self._history(rule) if rule.on is not None else {}
        if "change_pct" in (rule.left.name, rule.right.name if rule.right else ""):
            await self._previous_closes(rule.instruments)
        self.engine.add(rule, history, last_fired=row["last_fired_at"])

    async def _history(self, rule: Rule) -> dict[int, list[Any]]:
        assert rule.on is not None
        studies = [s.study for s in (rule.left, rule.right) if s is not None and s.study is not None]
        need = max((s.warmup(rule.on) for s in studies), default=0)
        if not need or self.candles is None:
            return {}
        end = rule.on.bucket_start(clock.now())
        out: dict[int, list[Any]] = {}
        for iid in rule.instruments:
            try:
                series = await self.candles.get_candles(
                    f"id:{iid}", rule.on, end - warmup_span(rule.on, need), end
                )
            except TradingHelperError as exc:
                log.warning(
                    "alert rule %d: no warm-up for id:%d (%s); its studies start live", rule.id, iid, exc
                )
                continue
            out[iid] = series.candles[-need:]
        return out

    async def _previous_closes(self, ids: set[int]) -> None:
        if self.candles is None:
            return
        today = Timeframe.D1.bucket_start(clock.now())
        for iid in ids - set(self.engine.prev_close):
            try:
                series = await self.candles.get_candles(
                    f"id:{iid}", Timeframe.D1, today - timedelta(days=15), today
                )
            except TradingHelperError as exc:
                log.warning("no previous close for id:%d (%s): change_pct waits for it", iid, exc)
                continue
            if series.candles:
                self.engine.prev_close[iid] = series.candles[-1].close

    # -- evaluation ---------------------------------------------------------------------------
    async def evaluate(self) -> None:
        """The ``alerts`` task: the live channel through the engine, until cancelled."""
        with db_errors("alerts: loading the rules"):
            await self.load()
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            with redis_errors("alerts: live channel"):
                await pubsub.subscribe(self.rules_channel)
                self.listening.set()
                rules_channel = self.rules_channel.encode()
                while True:
                    if self.engine.followed and not self.reading_ticks.is_set():
                        await pubsub.subscribe(self.channel)
                        self.reading_ticks.set()
                    elif not self.engine.followed and self.reading_ticks.is_set():
                        await pubsub.unsubscribe(self.channel)
                        self.reading_ticks.clear()
                    message = await pubsub.get_message(timeout=IDLE_S)
                    now = clock.now()
                    if message is None or message.get("type") != "message":
                        self._fired(self.engine.advance(now))
                        continue
                    if message.get("channel") == rules_channel:  # before the ticks sent after it
                        await self._announced(message["data"])
                        continue
                    try:  # every tick of the feed comes by: only those the rules follow are built
                        ticks = codec.decode_ticks_of(message["data"], self.engine.followed)
                    except ValueError:
                        BAD_FRAMES.inc()
                        continue
                    self._fired(self.engine.on_ticks(ticks, now))
        finally:
            self.listening.clear()
            self.reading_ticks.clear()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    def _fired(self, triggers: list[Trigger]) -> None:
        for trigger in triggers:
            self.queue.put_nowait(trigger)

    # -- delivery -----------------------------------------------------------------------------
    def _sender(self) -> Sender:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S))
        token = self.settings.TELEGRAM_BOT_TOKEN.get_secret_value()
        if self._bot is None and token:
            from telegram import Bot  # here: a slow import, needed only with a bot token

            self._bot = Bot(token, base_url=self.settings.TELEGRAM_API_URL)
        return Sender(self._http, self.settings.ALERT_WEBHOOK_SECRET.get_secret_value().encode(), self._bot)

    async def _record(
        self, trigger_id: int, channel: Channel, attempt: int, outcome: Outcome, at: datetime
    ) -> None:
        with db_errors("alerts: recording a delivery attempt"):
            await self.pool.execute(
                sql_alerts.INSERT_ATTEMPT,
                trigger_id,
                channel.type,
                channel.target,
                attempt,
                outcome.ok,
                outcome.status,
                outcome.error,
                at,
            )

    def _start_delivery(
        self,
        trigger_id: int,
        channel: Channel,
        payload: dict[str, object],
        done: int = 0,
        stored: asyncio.Task[int] | None = None,
    ) -> None:
        """Deliver on ``channel`` in a task; ``stored``: the trigger's insert, still running (the
        attempts are recorded under the id it answers, once it has)."""
        attempt_log = AttemptLog(self._record, trigger_id, stored, self._track)

        async def run() -> bool:
            async with self._slots:
                return await deliver(
                    self._sender(),
                    attempt_log.record,
                    trigger_id,
                    channel,
                    payload,
                    attempts=self.settings.ALERT_DELIVERY_ATTEMPTS,
                    first_attempt=done + 1,
                    backoff_max_s=self.settings.ALERT_RETRY_MAX_S,
                )

        self._track(asyncio.create_task(run(), name=f"alert-{trigger_id}-{channel.type}"))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._deliveries.add(task)
        task.add_done_callback(self._delivery_done)

    def _delivery_done(self, task: asyncio.Task[Any]) -> None:
        self._deliveries.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("alert delivery failed: %s", task.exception())

    async def deliver_triggers(self) -> None:
        """The ``alert-delivery`` task: store, publish and deliver each trigger, until cancelled."""
        with db_errors("alerts: reading undelivered triggers"):
            pending = await self.pool.fetch(sql_alerts.UNDELIVERED)
        for row in pending:
            if row["attempts"] < self.settings.ALERT_DELIVERY_ATTEMPTS:
                channel = Channel(row["channel"], row["target"])
                payload = {"trigger_id": row["id"], **json.loads(row["payload"])}  # as first sent
                self._start_delivery(row["id"], channel, payload, row["attempts"])
        self._refill_ids()
        # the HTTP session now, not on the first trigger: the first alerts after a start paid for it
        self._sender()
        try:
            while True:
                trigger = await self.queue.get()
                # each trigger in its own task: one slow insert never holds up the next trigger
                self._track(asyncio.create_task(self._fire(trigger), name=f"alert-fire-{trigger.key}"))
        finally:
            for task in list(self._deliveries):
                task.cancel()
            await asyncio.gather(*self._deliveries, return_exceptions=True)
            if self._http is not None:
                await self._http.close()
                self._http = None

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` until it succeeds, tried again while the database is away (capped backoff)."""
        attempt = 0
        while True:
            try:
                with db_errors(f"alerts: {what}"):
                    return await call()
            except TradingHelperError as exc:
                if not should_retry(exc):
                    raise
                attempt += 1
                delay = backoff_delay(attempt, 1.0, 30.0)
                log.warning("alerts: cannot %s (%s); again in %.1f s", what, exc, delay)
                await asyncio.sleep(delay)

    async def _reserve_ids(self) -> None:
        async with self._reserving:
            if len(self._ids) >= RESERVE_IDS // 2:
                return
            rows = await self._retrying(
                "reserve trigger ids", lambda: self.pool.fetch(sql_alerts.RESERVE_TRIGGER_IDS, RESERVE_IDS)
            )
            self._ids.extend(sorted(r["id"] for r in rows))

    def _refill_ids(self) -> None:
        if len(self._ids) < RESERVE_IDS // 2 and (self._refill is None or self._refill.done()):
            self._refill = asyncio.create_task(self._reserve_ids(), name="alert-trigger-ids")
            self._track(self._refill)

    async def _fire(self, trigger: Trigger) -> None:
        """Deliver the trigger under an id reserved for it while it is stored (its commit is no
        longer on the path from tick to receiver); the WebSocket clients hear of it once stored.

        At least once, as before: until the insert commits, the trigger is in this process only
        (it was in the queue before); once it has, a restart takes up what was not delivered. A
        trigger stored before under the same key (a replay) is delivered again with that key, for
        the receiver to drop, and its attempts are recorded under the stored trigger."""
        while not self._ids:
            await self._reserve_ids()
        trigger_id = self._ids.popleft()
        self._refill_ids()
        payload = trigger.as_json()
        sent = {"trigger_id": trigger_id, **payload}
        stored = asyncio.create_task(
            self._store(trigger, trigger_id, payload, sent), name=f"alert-store-{trigger.key}"
        )
        self._track(stored)
        if trigger.rule.repeat == "once":
            self.engine.remove(trigger.rule.id)
        for channel in trigger.rule.channels:
            self._start_delivery(trigger_id, channel, sent, stored=stored)

    async def _store(
        self, trigger: Trigger, trigger_id: int, payload: dict[str, object], sent: dict[str, object]
    ) -> int:
        """Store the trigger under ``trigger_id`` (tried again while the database is away: it is
        not lost), then tell the WebSocket clients (``sent``: the trigger as delivered), so that a
        page which reads the rule and its history on the alert finds them; the id it is stored
        under (another one when it was stored before: then nothing is told)."""
        row = await self._retrying(
            "store a trigger",
            lambda: self.pool.fetchrow(
                sql_alerts.INSERT_TRIGGER,
                trigger.rule.id,
                trigger.key,
                trigger.observed_at,
                json.dumps(payload),
                trigger.rule.repeat == "once",
                trigger_id,
            ),
        )
        assert row is not None  # the trigger's row, new or earlier
        if row["fresh"]:
            TRIGGERS.inc()
            if self.publish is not None:
                self.publish({"type": "alert", "data": sent})
        stored_id: int = row["id"]
        return stored_id
