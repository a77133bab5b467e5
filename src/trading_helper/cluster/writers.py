"""``trading-helper write``: database writers for the shard streams this process holds a lease on.

Any number of writer processes run; each stream of the plan (one per shard) is written by the one
holding its lease, with the usual :class:`~trading_helper.ingest.writer.StreamWriter` (rows and
offset in one transaction; the same consumer name for whoever holds the stream, so a taker reads
the dead owner's unacknowledged entries first and skips those its offset covers). The lease is
not what makes it exactly once: the offset is committed under the stream's advisory lock and a
taker reads it under the same lock (storage/ticks.py), so a commit of an owner that lost its
lease is either seen by the taker or never made. One writer process (by lease) also runs the
maintenance (candle rollup, retention, job health) that ``serve`` runs in its ingest service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from trading_helper.cluster.coordinator import PlanReader
from trading_helper.cluster.fence import FencedRedis
from trading_helper.cluster.lease import LeaseGroup
from trading_helper.cluster.leasekeys import lease_key
from trading_helper.cluster.tasks import run_until_one_fails
from trading_helper.config import Settings
from trading_helper.ingest import keys
from trading_helper.ingest.lags import LagHistograms
from trading_helper.ingest.redisconn import REDIS_FAILURES
from trading_helper.ingest.writer import StreamWriter
from trading_helper.looplag import LoopLag
from trading_helper.storage.db import db_errors
from trading_helper.storage.migrate import current_flavour
from trading_helper.supervisor import Supervisor

log = logging.getLogger(__name__)

#: the consumer name of every stream's writer: a taker reads its predecessor's pending entries
CONSUMER = "writer"
STATUS_EVERY_S = 1.0
#: entries pending this long on a stream we hold are orphans (a healthy writer acks within a second)
ORPHAN_IDLE_S = 15.0


class Writers:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.tasks = Supervisor()
        self.writers: dict[str, StreamWriter] = {}
        #: every writer this process ran (counts carry on after a stream is given up)
        self._retired = Counter[str]()
        self.lags = LagHistograms()
        self.orphan_restarts = 0
        self._plans = PlanReader(redis)
        self.loop_lag = LoopLag("writer")
        self.leases = LeaseGroup(
            redis,
            "writer",
            on_acquired=self._acquired,
            on_lost=self._lost,
            ttl_s=settings.LEASE_TTL_S,
            watch=True,  # a dead writer's streams stall until they are taken
        )
        self.maintenance_lease = LeaseGroup(
            redis,
            "maintenance",
            on_acquired=self._maintain,
            on_lost=self._stop_maintaining,
            ttl_s=settings.LEASE_TTL_S,
            owner=self.leases.owner,
            max_held=1,
        )

    async def _acquired(self, stream: str) -> None:
        # reads refused by Redis itself once the lease is another's: two writers reading one
        # stream could commit out of order, and the offset (a high-water mark) would then count
        # the earlier entries as committed; the offset's compare-and-set keeps them from doubling
        token = self.leases.token(stream)
        fenced = FencedRedis(lease_key("writer", stream), token, connection_pool=self.redis.connection_pool)
        writer = StreamWriter(
            fenced,
            self.pool,
            stream=stream,
            consumer=CONSUMER,
            max_ticks_per_batch=self.settings.TICK_BUFFER_SIZE,
            block_ms=self.settings.flush_interval_ms,
            record_lags=True,
        )
        self.writers[stream] = writer
        self.tasks.start(f"writer {stream}", writer.run)
        log.info("writing stream %s", stream)

    async def _lost(self, stream: str) -> None:
        await self.tasks.stop([f"writer {stream}"], timeout_s=5.0)
        writer = self.writers.pop(stream, None)
        if writer is not None:
            self._drain_lags(writer)
            self._retired["written"] += writer.stats.written
            self._retired["lost"] += writer.stats.lost
            self._retired["dead_lettered"] += writer.stats.dead_lettered

    async def _maintain(self, _: str) -> None:
        from trading_helper.export.archive import FoArchive  # pyarrow: only where maintenance runs
        from trading_helper.storage.maintenance import Maintenance

        with db_errors("reading the schema flavour"):
            async with self.pool.acquire() as conn:
                flavour = await current_flavour(conn)
        archive = FoArchive(self.settings, self.pool)
        job = Maintenance(self.settings, self.pool, flavour, hourly=(("fo_archive", archive.run),))
        self.tasks.start("maintenance", job.run)

    async def _stop_maintaining(self, _: str) -> None:
        await self.tasks.stop(["maintenance"], timeout_s=5.0)

    async def _wanted(self) -> list[str]:
        plan = await self._plans.read()
        if plan is None:
            return list(self.writers)
        return [keys.shard_stream(self.settings.TICK_STREAM, s.key) for s in plan.shards]

    async def _maintenance_wanted(self) -> list[str]:
        return ["maintenance"]

    def _drain_lags(self, writer: StreamWriter) -> None:
        if writer.stats.lags is not None:
            self.lags.merge(writer.stats.lags.take())

    def status(self) -> dict[str, Any]:
        for writer in self.writers.values():
            self._drain_lags(writer)
        return {
            "streams": sorted(self.writers),
            "written": self._retired["written"] + sum(w.stats.written for w in self.writers.values()),
            "lost": self._retired["lost"] + sum(w.stats.lost for w in self.writers.values()),
            "dead_lettered": self._retired["dead_lettered"]
            + sum(w.stats.dead_lettered for w in self.writers.values()),
            "tasks_down": sorted(t.name for t in self.tasks.down()),
            "maintenance": bool(self.maintenance_lease.held),
            "orphan_restarts": self.orphan_restarts,
            # histograms (ms -> ticks) of the lag and of its stages, since the start
            "receive_to_commit_ms": self.lags.as_json(),
        } | self.loop_lag.take()

    async def _sweep_orphans(self) -> None:
        """Entries read but never acknowledged, idle for ORPHAN_IDLE_S on a stream we hold: read
        by an owner that lost its lease and stopped before committing them (after our writer had
        walked the pending list), or left by a writer task that died. The writer is restarted:
        its start walks the pending list again (what the offset covers is acknowledged unwritten)."""
        for stream, writer in list(self.writers.items()):
            if writer.stats.db_down_since is not None or writer.stats.db_busy_since is not None:
                continue  # waiting for the database: its entries are pending on purpose
            stale = await self.redis.xpending_range(
                stream, keys.WRITER_GROUP, min="-", max="+", count=1, idle=round(ORPHAN_IDLE_S * 1000)
            )
            if stale and stream in self.writers:
                log.warning(
                    "stream %s has entries pending for %.0f s: restarting its writer", stream, ORPHAN_IDLE_S
                )
                await self.tasks.stop([f"writer {stream}"], timeout_s=5.0)
                if stream in self.writers:
                    self.tasks.start(f"writer {stream}", writer.run)
                    self.orphan_restarts += 1

    async def _publish_status(self) -> None:
        turns = 0
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            turns += 1
            if turns % 5 == 0:
                with contextlib.suppress(*REDIS_FAILURES):
                    await self._sweep_orphans()
            with contextlib.suppress(*REDIS_FAILURES):
                await self.redis.hset(keys.WRITER_STATUS, self.leases.owner, json.dumps(self.status()))
                await self.redis.expire(keys.WRITER_STATUS, 600)

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self.leases.run(self._wanted), name="stream leases"),
            asyncio.create_task(
                self.maintenance_lease.run(self._maintenance_wanted), name="maintenance lease"
            ),
            asyncio.create_task(self._publish_status(), name="writer status"),
        ]
        log.info("writer %s started", self.leases.owner)
        self.loop_lag.start()
        try:
            await run_until_one_fails(tasks)
        finally:
            await self.loop_lag.stop()
            await self.tasks.stop(timeout_s=5.0)
