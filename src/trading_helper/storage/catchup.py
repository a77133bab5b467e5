"""Bring every candle level up to date now, lowest level first, rather than on each level's schedule.

Used after late data (a drained backlog, a restart, a backfill: ticks written for buckets already
materialised) and as the fallback when a level's refresh policy failed or its scheduler is down.

* plain PostgreSQL: ``refresh_candles()`` already rebuilds exactly the invalidated buckets level
  by level; one call.
* TimescaleDB: for each level, ``candle_refresh_windows()`` (migration 7) lists what TimescaleDB
  logged as invalidated below its watermark and, for a level whose policy is failing, what the
  policy should have materialised by now; each window is refreshed with
  ``CALL refresh_continuous_aggregate`` on an autocommit connection (it refuses a transaction
  block). A level is built from the materialised rows of the one below, so the levels go in order
  and each is asked for its windows only after the one below was refreshed. Each level above 1m is
  also given the windows just refreshed below it and refreshes with ``force``: TimescaleDB before
  2.25.2 does not log every such change as an invalidation (migration 11 says why).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Counter

from trading_helper.storage import queries
from trading_helper.storage.db import Statements
from trading_helper.timeframes import Timeframe

log = logging.getLogger(__name__)

REFRESHES = Counter(
    "th_candle_catchup_refreshes_total",
    "Candle windows the service refreshed itself, by level and reason",
    ["relation", "reason"],
)


@dataclass(slots=True)
class CatchUpReport:
    #: (relation, window start, window end, reason) of every refresh run
    refreshed: list[tuple[str, datetime, datetime, str]] = field(default_factory=list)

    def describe(self) -> str:
        return "; ".join(
            f"{rel} {a.isoformat()} .. {b.isoformat()} ({why})" for rel, a, b, why in self.refreshed
        )


async def catch_up(conn: Statements, flavour: str, *, fallback: Iterable[str] | None = ()) -> CatchUpReport:
    """Refresh what is invalidated at every level; with ``fallback`` (candle relations, None for
    all) also what those levels' policies should have materialised by now."""
    report = CatchUpReport()
    if flavour != "timescale":
        await conn.execute(queries.REFRESH_CANDLES)
        return report
    wanted = None if fallback is None else set(fallback)
    below: list[tuple[float, float]] | None = None  # what the level below refreshed (None at 1m)
    for tf in Timeframe:  # 1m first: each level reads the one below
        unmaterialised = wanted is None or tf.relation in wanted
        rows = await conn.fetch(
            queries.CANDLE_REFRESH_WINDOWS,
            tf.relation,
            tf.width.total_seconds(),
            unmaterialised,
            None if below is None else _multirange(below),
        )
        reason = "fallback" if unmaterialised else "late data"
        refreshed: list[tuple[float, float]] = []
        for row in rows:
            start, end = float(row["window_start"]), float(row["window_end"])
            await conn.execute(
                queries.REFRESH_CONTINUOUS_AGGREGATE, tf.relation, start, end, below is not None
            )
            refreshed.append((start, end))
            REFRESHES.labels(tf.relation, reason).inc()
            report.refreshed.append(
                (tf.relation, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC), reason)
            )
        below = refreshed
    return report


def _multirange(windows: Sequence[tuple[float, float]]) -> str:
    """Epoch-second windows as a tstzmultirange literal ('{}' when there are none)."""
    parts = (
        f"[{datetime.fromtimestamp(a, UTC).isoformat()},{datetime.fromtimestamp(b, UTC).isoformat()})"
        for a, b in windows
    )
    return "{" + ",".join(parts) + "}"
