"""Delivering a trigger: a signed webhook or a Telegram message, at least once.

Webhook: ``POST <url>`` with the trigger as JSON and these headers::

    Idempotency-Key: r12-1772424960000000-0        (the same for every attempt of one trigger)
    X-TH-Timestamp:  1772424961                     (unix seconds of this attempt)
    X-TH-Signature:  sha256=<hex HMAC-SHA256(ALERT_WEBHOOK_SECRET, "<timestamp>.<body>")>

A receiver recomputes the HMAC over the raw body (:func:`verify`), refuses an old timestamp and
drops a key it has seen. Telegram goes through python-telegram-bot's ``Bot`` (its ``base_url``
set from ``TELEGRAM_API_URL``).

Webhooks go through one aiohttp session: httpx, tried first, cost four times the CPU per request
and 117 ms for a burst of 50 (new connections through its pool's locks) against aiohttp's 13 ms,
which put the first second's triggers over the latency target.

Every attempt is recorded (``record``). An answer that says "not now" (network error, timeout,
HTTP 408/429/5xx, Telegram's RetryAfter) is tried again after a capped exponential backoff with
jitter, up to ``ALERT_DELIVERY_ATTEMPTS``; a refusal (another 4xx, a chat the bot cannot write to)
is final: more attempts would only repeat it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from prometheus_client import Counter

from trading_helper.alerts.rules import Channel
from trading_helper.redact import redact
from trading_helper.supervisor import describe

if TYPE_CHECKING:  # python-telegram-bot is imported when a Telegram alert is sent (a slow import)
    from telegram import Bot

log = logging.getLogger(__name__)

ATTEMPTS = Counter("th_alert_delivery_attempts_total", "Alert delivery attempts", ["channel", "outcome"])

SIGNATURE_HEADER = "X-TH-Signature"
TIMESTAMP_HEADER = "X-TH-Timestamp"
KEY_HEADER = "Idempotency-Key"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, *, max_age_s: float = 300) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent."""
    try:
        fresh = abs(time.time() - int(timestamp)) <= max_age_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass(slots=True)
class Outcome:
    ok: bool
    status: int | None = None
    error: str | None = None
    retry: bool = False
    retry_after_s: float | None = None


#: (trigger id, channel, attempt number, outcome) -> recorded
Record = Callable[[int, Channel, int, Outcome], Awaitable[None]]


class Sender:
    """One attempt per call, for either channel type."""

    def __init__(self, client: aiohttp.ClientSession, secret: bytes, bot: Bot | None) -> None:
        self.client = client
        self.secret = secret
        self.bot = bot

    async def send(self, channel: Channel, payload: dict[str, object]) -> Outcome:
        if channel.type == "webhook":
            return await self._webhook(channel.target, payload)
        return await self._telegram(channel.target, payload)

    async def _webhook(self, url: str, payload: dict[str, object]) -> Outcome:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            KEY_HEADER: str(payload["idempotency_key"]),
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(self.secret, stamp, body),
        }
        try:
            async with self.client.post(url, data=body, headers=headers, allow_redirects=False) as answer:
                await answer.read()  # the connection goes back to the pool only once read
                code, retry_after = answer.status, answer.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome(False, error=redact(f"{type(exc).__name__}: {exc}")[:300], retry=True)
        if 200 <= code < 300:
            return Outcome(True, code)
        return Outcome(
            False,
            code,
            f"HTTP {code}",
            retry=code in (408, 425, 429) or code >= 500,
            retry_after_s=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )

    async def _telegram(self, chat_id: str, payload: dict[str, object]) -> Outcome:
        if self.bot is None:
            return Outcome(False, error="TELEGRAM_BOT_TOKEN is not set")
        # imported here: python-telegram-bot is a slow import, needed only with a bot token
        from telegram.error import (
            BadRequest,
            ChatMigrated,
            Forbidden,
            InvalidToken,
            RetryAfter,
            TelegramError,
        )
        from telegram.warnings import PTBDeprecationWarning

        text = f"🔔 {payload.get('name') or 'Alert'}: {payload['condition']}\n" + (
            f"{payload['left']:g} vs {payload['right']:g} at {payload['observed_at']}"
            if isinstance(payload["left"], float) and isinstance(payload["right"], float)
            else ""
        )
        try:
            await self.bot.send_message(chat_id=chat_id, text=text)
        except RetryAfter as exc:
            with warnings.catch_warnings():  # v22.2 warns that it becomes a timedelta; either is read
                warnings.simplefilter("ignore", PTBDeprecationWarning)
                wait = exc.retry_after
            seconds = wait if isinstance(wait, int | float) else wait.total_seconds()
            return Outcome(False, 429, "Telegram: retry after", retry=True, retry_after_s=float(seconds))
        except (BadRequest, Forbidden, InvalidToken, ChatMigrated) as exc:
            return Outcome(False, error=redact(f"Telegram refused: {exc.message}")[:300])
        except TelegramError as exc:  # NetworkError, TimedOut: worth another try
            return Outcome(False, error=redact(f"Telegram: {exc.message}")[:300], retry=True)
        return Outcome(True, 200)


async def deliver(
    sender: Sender,
    record: Record,
    trigger_id: int,
    channel: Channel,
    payload: dict[str, object],
    *,
    attempts: int,
    first_attempt: int = 1,
    backoff_initial_s: float = 0.2,
    backoff_max_s: float = 60.0,
) -> bool:
    """Attempts from ``first_attempt`` until one succeeds, one is refused for good or ``attempts``
    are used; each recorded. True when delivered."""
    delay = backoff_initial_s
    for attempt in range(first_attempt, attempts + 1):
        try:
            outcome = await sender.send(channel, payload)
        except Exception as exc:  # a bug or a library surprise: recorded, and tried again
            log.exception("alert %s: sending on %s failed", payload["idempotency_key"], channel.type)
            outcome = Outcome(False, error=redact(describe(exc)), retry=True)
        ATTEMPTS.labels(channel.type, "ok" if outcome.ok else "retry" if outcome.retry else "refused").inc()
        await record(trigger_id, channel, attempt, outcome)
        if outcome.ok:
            return True
        if not outcome.retry:
            log.warning(
                "alert %s: %s refused it: %s", payload["idempotency_key"], channel.type, outcome.error
            )
            return False
        if attempt < attempts:
            wait = (
                outcome.retry_after_s
                if outcome.retry_after_s is not None
                else delay * (0.8 + 0.4 * random.random())
            )
            await asyncio.sleep(min(wait, backoff_max_s))
            delay = min(delay * 2, backoff_max_s)
    log.warning("alert %s: %s failed %d times: given up", payload["idempotency_key"], channel.type, attempts)
    return False


class AttemptLog:
    """A delivery's attempts, recorded in order under the id its trigger is stored under. While
    the trigger's insert (``stored``) runs, attempts wait here, not in the delivery: its next
    attempt and the other deliveries go on; they are written, in order, once it has answered."""

    def __init__(
        self,
        write: Callable[[int, Channel, int, Outcome, datetime], Awaitable[None]],
        trigger_id: int,
        stored: asyncio.Task[int] | None,
        track: Callable[[asyncio.Task[Any]], None],
    ) -> None:
        self.write, self.trigger_id, self.stored, self.track = write, trigger_id, stored, track
        self.waiting: deque[tuple[Channel, int, Outcome, datetime]] = deque()
        self.flushing: asyncio.Task[None] | None = None

    async def record(self, _: int, channel: Channel, attempt: int, outcome: Outcome) -> None:
        at = datetime.now(UTC)  # when it was attempted, not when it is written
        idle = self.flushing is None or self.flushing.done()
        if self.stored is None or (self.stored.done() and idle and not self.waiting):
            stored_id = self.trigger_id if self.stored is None else self.stored.result()
            await self.write(stored_id, channel, attempt, outcome, at)
            return
        self.waiting.append((channel, attempt, outcome, at))
        if idle:
            self.flushing = asyncio.create_task(self._flush())
            self.track(self.flushing)

    async def _flush(self) -> None:
        assert self.stored is not None
        stored_id = await asyncio.shield(self.stored)
        while self.waiting:
            await self.write(stored_id, *self.waiting[0])
            self.waiting.popleft()
