"""The permanent F&O archive, the service's part (the database's is migration 0013).

Each hour the ingest service's maintenance runs :meth:`FoArchive.run`: it writes the settings
into ``archive_policy`` (``ARCHIVE_FO_CANDLES``, ``ARCHIVE_FO_TICKS``), which the database's
``archive_market_data()`` reads when ``apply_retention()`` runs (plain PostgreSQL: this service,
hourly; TimescaleDB: its ``apply_retention_job``), and with ``ARCHIVE_FO_TICKS=parquet`` it exports
the ticks of futures and options to one Parquet file per UTC day under ``ARCHIVE_DIR/ticks/``,
once the day is older than 6 days (final: the writer refuses older ticks) and a day before the
7-day retention drops it. ``archive_progress`` remembers the last day exported, so each is written
once, and a day that failed is tried again on the next run.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from trading_helper import clock
from trading_helper.config import Settings
from trading_helper.export.run import export_to_file
from trading_helper.export.source import ExportRequest
from trading_helper.storage import sql_archive
from trading_helper.storage.instruments import get_instrument

log = logging.getLogger(__name__)

#: a tick day is final (and exported) once it ended this long ago
FINAL_AFTER = timedelta(days=6)
_DAY = timedelta(days=1)


def tick_file(root: Path, day: datetime) -> Path:
    return root / "ticks" / f"{day:%Y-%m-%d}.parquet"


class FoArchive:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool

    async def run(self, now: datetime | None = None) -> list[Path]:
        """Writes the policy; exports the tick days due (``parquet``). Returns the files written."""
        now = now or clock.now()
        ticks = self.settings.ARCHIVE_FO_TICKS
        await self.pool.execute(sql_archive.SET_POLICY, self.settings.ARCHIVE_FO_CANDLES, ticks)
        if ticks != "parquet":
            return []
        return await self.export_tick_days(now)

    async def export_tick_days(self, now: datetime) -> list[Path]:
        done = await self.pool.fetchval(sql_archive.PROGRESS, "tick_files")
        first = done or await self.pool.fetchval(sql_archive.FIRST_TICK)
        if first is None:
            return []
        day = first.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        written: list[Path] = []
        while day + _DAY <= now - FINAL_AFTER:
            path = await self._export_day(day)
            if path is not None:
                written.append(path)
            day += _DAY
            await self.pool.execute(sql_archive.SET_PROGRESS, "tick_files", day)
        return written

    async def _export_day(self, day: datetime) -> Path | None:
        ids = [r[0] for r in await self.pool.fetch(sql_archive.FO_WITH_TICKS, day, day + _DAY)]
        if not ids:
            return None
        async with self.pool.acquire() as conn:
            instruments = tuple([await get_instrument(conn, i) for i in ids])
        path = tick_file(self.settings.ARCHIVE_DIR, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        req = ExportRequest("ticks", instruments, day, day + _DAY, zone="utc")
        size = await export_to_file(self.pool, req, "parquet", path)
        log.info(
            "archived the F&O ticks of %s: %d instruments, %d bytes in %s",
            f"{day:%Y-%m-%d}",
            len(ids),
            size,
            path,
        )
        return path
