"""What the API needs from the rest of the process, handed to ``create_app``.

The API never builds its own broker, pool or Redis client: the process (``trading-helper serve``,
the demo, a test) owns them and passes them here, so one broker instance and one rate limiter
serve every request. ``pool`` is the API's own (``serve`` gives ingest another one);
``read_pool``, when READ_DATABASE_URL is set, a pool on the read replica for candle and instrument
reads (:attr:`Runtime.reader`). Writes always go to ``pool``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg
import redis.asyncio as aioredis

from trading_helper.brokers.base import Broker
from trading_helper.config import Settings
from trading_helper.supervisor import Supervisor


class IngestControl(Protocol):
    """The ingest service as the API sees it (implemented by ``ingest.service.IngestService``).

    Subscriptions are persisted by the API in ``subscriptions``; the ingest service re-subscribes
    them on every start, so the API works without one (``Runtime.ingest`` None).
    """

    async def subscribe(self, instrument_ids: Sequence[int]) -> None: ...

    async def unsubscribe(self, instrument_ids: Sequence[int]) -> None: ...

    def status(self) -> dict[str, object]: ...


@dataclass(slots=True)
class Runtime:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis | None = None
    broker: Broker | None = None
    ingest: IngestControl | None = None
    #: the process's long-lived tasks (shown by /health, /api/status and /metrics)
    supervisor: Supervisor | None = None
    #: the read replica's pool (READ_DATABASE_URL); None: reads go to ``pool``
    read_pool: asyncpg.Pool | None = None

    @property
    def reader(self) -> asyncpg.Pool:
        """The pool of the API's candle and instrument reads: the replica's, else the primary's."""
        return self.read_pool if self.read_pool is not None else self.pool
