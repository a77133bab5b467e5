"""The soak's history check: every hole (a session trade not received) fetched from the broker,
none twice; and, for a hole no request covered, what was around it (to find the fault that made it)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from trading_helper.bench.soak.kite_standin import HistoryRequest
from trading_helper.bench.soak.market import SESSION, SoakTick
from trading_helper.bench.soak.oracle import IST, WIDTHS, bucket_of


def check_history(
    history: list[HistoryRequest],
    received: set[tuple[int, int]],
    all_ticks: dict[tuple[int, int], SoakTick],
    final: datetime,
) -> tuple[set[tuple[str, int, datetime]], list[dict[str, Any]]]:
    """(session buckets with a trade not received that no history request covers, requests that
    asked again for a range an earlier request of the same token and timeframe covered, each with
    the earlier ones it overlaps and its order among all requests)."""
    by_key: dict[tuple[int, str], list[tuple[int, datetime, datetime]]] = {}
    refetched: list[dict[str, Any]] = []
    for n, req in enumerate(history):
        earlier = by_key.setdefault((req.token, req.timeframe), [])
        overlapped = [(m, s, e) for m, s, e in earlier if s < req.end and req.start < e]
        if overlapped:
            refetched.append(
                {
                    "token": req.token,
                    "timeframe": req.timeframe,
                    "request": [n, req.start.isoformat(), req.end.isoformat()],
                    "overlaps": [[m, s.isoformat(), e.isoformat()] for m, s, e in overlapped],
                }
            )
        earlier.append((n, req.start, req.end))
    unfetched: set[tuple[str, int, datetime]] = set()
    for key, t in all_ticks.items():
        if not t.trade or key in received:
            continue
        ts = datetime.fromtimestamp(t.epoch, IST)
        if not SESSION[0] <= ts.time() < SESSION[1]:
            continue  # outside the session: nothing to backfill (the pre-open is not a session)
        for tf, width in WIDTHS.items():
            bucket = bucket_of(ts, width)
            if bucket + width > final:
                continue
            stamp = ts.replace(hour=0, minute=0, second=0) if tf == "1d" else bucket
            if not any(s <= stamp <= e for _, s, e in by_key.get((t.token, tf), [])):
                unfetched.add((tf, t.token, bucket))
    return unfetched, refetched


#: live coverage of one instrument overlapping a time range (the soak's diagnosis only)
COVERAGE_AROUND = """
SELECT lower(period) AS lo, upper(period) AS hi, open FROM live_coverage
WHERE instrument_id = $1 AND period && tstzrange($2, $3) ORDER BY lower(period)
"""


async def diagnose(
    db: asyncpg.Connection,
    unfetched: set[tuple[str, int, datetime]],
    *,
    all_ticks: dict[tuple[int, int], SoakTick],
    received: set[tuple[int, int]],
    sent: dict[tuple[int, int], tuple[float, int]],
    ids: dict[int, int],
    faults: list[tuple[str, datetime]],
    limit: int = 12,
) -> list[dict[str, Any]]:
    """For each unfetched bucket (up to ``limit``, earliest first): the instrument, the bucket, its
    trades not received (exchange time, when it was due to be sent, whether it was), the fault
    nearest in time and the live coverage rows from a minute before the bucket to a minute after."""
    out: list[dict[str, Any]] = []
    for tf, token, bucket in sorted(unfetched, key=lambda k: (k[2], k[1], k[0]))[:limit]:
        end = bucket + WIDTHS[tf]
        lost = [
            t
            for (tok, epoch), t in all_ticks.items()
            if tok == token
            and t.trade
            and (tok, epoch) not in received
            and bucket.timestamp() <= epoch < end.timestamp()
        ]
        nearest = min(faults, key=lambda f: abs((f[1] - bucket).total_seconds()), default=None)
        rows = await db.fetch(COVERAGE_AROUND, ids.get(token, -1), bucket - _AROUND, end + _AROUND)
        out.append(
            {
                "timeframe": tf,
                "token": token,
                "bucket": bucket.isoformat(),
                "missing_trades": [
                    {
                        "at": _ist(t.epoch),
                        "due": _ist(t.send_at, ms=True),
                        "sent": (t.token, t.epoch) in sent,
                    }
                    for t in sorted(lost, key=lambda t: t.epoch)[:5]
                ],
                "nearest_fault": None
                if nearest is None
                else {"kind": nearest[0], "at": nearest[1].isoformat()},
                "coverage": [
                    [
                        r["lo"].astimezone(IST).isoformat(timespec="milliseconds"),
                        r["hi"].astimezone(IST).isoformat(timespec="milliseconds"),
                        r["open"],
                    ]
                    for r in rows
                ],
            }
        )
    return out


_AROUND = timedelta(minutes=1)


def _ist(epoch: float, *, ms: bool = False) -> str:
    return datetime.fromtimestamp(epoch, IST).isoformat(timespec="milliseconds" if ms else "seconds")
