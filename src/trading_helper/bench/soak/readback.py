"""Reading the soak back: the day's candles through the API, then every account of the run
(ticks sent, received, stored once; dead letters; candles against the oracle; holes fetched)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from trading_helper.bench.soak.candlecheck import check_candles, ranges
from trading_helper.bench.soak.faults import Fault, FaultInjection
from trading_helper.bench.soak.holes import check_history, diagnose
from trading_helper.bench.soak.market import POISON_PRICE
from trading_helper.bench.soak.memory import MemoryLog
from trading_helper.bench.soak.oracle import IST, WIDTHS

#: where a received tick lands, each row keyed by (instrument, feed time in epoch seconds): trades in
#: tick_data (its feed time in exchange_time since migration 6), updates with no new trade in
#: quote_updates; a table missing from this schema version is skipped
_LANDINGS: tuple[tuple[str, str], ...] = (
    (
        "tick_data",
        "SELECT instrument_id, extract(epoch FROM coalesce(exchange_time, time))::bigint AS epoch, "
        "count(*) AS n FROM tick_data GROUP BY 1, 2",
    ),
    (
        "quote_updates",
        "SELECT instrument_id, extract(epoch FROM time)::bigint AS epoch, count(*) AS n "
        "FROM quote_updates GROUP BY 1, 2",
    ),
)
#: rows the database refused, kept aside (dead letters)
_DEAD_LETTERED = "SELECT count(*) FROM tick_rejects"
_EXISTS = "SELECT to_regclass($1) IS NOT NULL"


class ReadBack(FaultInjection):
    """The reading and checking methods of :class:`~trading_helper.bench.soak.run.Soak`."""

    days: list[date]
    instruments: int
    speed: float
    faults: list[Fault]
    memory: MemoryLog
    api_candles: dict[tuple[str, int, datetime], dict[str, Any]]
    service_status: dict[int, dict[str, Any]]
    api_errors: Counter[str]

    async def _drain(self, day: date) -> None:
        """Wait (bounded) until the day's last received tick is stored."""
        sent = [t for t in self.market.ticks[day] if (t.token, t.epoch) in self.kite.sent]
        if not sent:
            return
        last = max(t.epoch for t in sent)
        await self._recovered(lambda: self._stored_since(datetime.fromtimestamp(last, IST)), time.monotonic())
        await asyncio.sleep(3)  # candle refresh (every second on plain PostgreSQL)

    async def _read_day(self, day: date) -> None:
        start = datetime(day.year, day.month, day.day, 0, 15, tzinfo=IST)
        for inst in self.market.instruments:
            for tf in WIDTHS:
                resp = await self.http.get(
                    "/api/candles",
                    params={
                        "instrument": str(inst.token),
                        "interval": tf,
                        "from": start.isoformat(),
                        "to": (start + timedelta(days=1)).isoformat(),
                    },
                )
                if resp.status_code != 200:
                    self.api_errors[f"{resp.status_code}"] += 1
                    continue
                for c in resp.json()["candles"]:
                    self.api_candles[(tf, inst.token, datetime.fromisoformat(c["time"]))] = c

    async def _check(self) -> dict[str, Any]:
        # every day read again now: buckets that were not final when the day was read (its 1d, read
        # at 16:00) are final now and their holes fetched; then a second read must not reach the
        # broker again
        for day in self.days:
            await self._read_day(day)
        history_before = len(self.kite.history)
        for day in self.days:
            await self._read_day(day)
        second_read_calls = len(self.kite.history) - history_before

        all_ticks = {(t.token, t.epoch): t for d in self.days for t in self.market.ticks[d]}
        sent = self.kite.sent
        in_flight = {
            k
            for k, (at, number) in sent.items()
            if any(number in numbers and at >= stop - lead for stop, lead, numbers in self.stops)
        }
        token_of = {iid: tok for tok, iid in self.ids.items()}
        rows: Counter[tuple[int, int]] = Counter()
        landed: dict[str, int] = {}
        for table, query in _LANDINGS:
            if not await self.db.fetchval(_EXISTS, table):
                continue
            try:
                found = await self.db.fetch(query)
            except asyncpg.UndefinedColumnError:  # tick_data before migration 6: no exchange_time
                found = await self.db.fetch(query.replace("coalesce(exchange_time, time)", "time"))
            landed[table] = sum(r["n"] for r in found)
            for r in found:
                rows[(token_of.get(r["instrument_id"], -1), r["epoch"])] += r["n"]
        stored = {k for k in rows if k in sent}
        received = (set(sent) - in_flight) | (in_flight & stored)
        dead = (
            await self.db.fetchval(_DEAD_LETTERED) if await self.db.fetchval(_EXISTS, "tick_rejects") else 0
        )
        missing = received - stored
        poison_sent = sum(1 for k in received if all_ticks[k].trade and all_ticks[k].price == POISON_PRICE)

        mismatches, checked, samples = check_candles(
            self.market, self.days, self.api_candles, received, all_ticks
        )
        final = self.now() - timedelta(minutes=2)
        unfetched, refetched = check_history(self.kite.history, received, all_ticks, final)
        holes = await diagnose(
            self.db,
            unfetched,
            all_ticks=all_ticks,
            received=received,
            sent=sent,
            ids=self.ids,
            faults=[(f.kind, datetime.fromisoformat(f.at)) for f in self.faults],
        )
        return {
            "days": len(self.days),
            "first_day": self.days[0].isoformat(),
            "last_day": self.days[-1].isoformat(),
            "instruments": self.instruments,
            "speed": self.speed,
            "ticks_generated": len(all_ticks),
            "ticks_sent": len(sent),
            "ticks_in_flight_at_stop": len(in_flight),
            # how far behind the stand-in each stopped serve was (what it had put in Redis)
            "serve_behind_at_stop_s": self.stop_lags,
            "ticks_received": len(received),
            "ticks_stored": len(stored),
            "rows_by_table": landed,
            "lost": max(0, len(missing) - dead),
            "missing_from_tick_data": len(missing),
            "duplicated": sum(n - 1 for n in rows.values() if n > 1),
            "duplicated_ranges": ranges({k for k, n in rows.items() if n > 1}),
            "unexpected_rows": sum(n for k, n in rows.items() if k not in sent),
            "missing_ranges": ranges(missing),
            "dead_lettered": dead,
            "poison_ticks_sent": poison_sent,
            "candles_checked": sum(checked.values()),
            "candles_checked_by_timeframe": dict(checked),
            "candle_mismatches": sum(mismatches.values()),
            "candle_mismatches_by_kind": dict(mismatches),
            "candle_mismatch_samples": samples,
            "history_requests": len(self.kite.history),
            "history_refetched": len(refetched),
            "history_refetched_samples": refetched[:12],
            "history_calls_on_second_read": second_read_calls,
            "holes_unfetched": len(unfetched),
            "holes_unfetched_samples": holes,
            "api_errors": dict(self.api_errors),
            # what the service itself counted, last seen per process (up to a second stale)
            "service_received": sum(int(st.get("received") or 0) for st in self.service_status.values()),
            "service_rejected": dict(
                sum((Counter(st.get("rejected") or {}) for st in self.service_status.values()), Counter())
            ),
            "faults": [f.out() for f in self.faults],
            "faults_unrecovered": sum(1 for f in self.faults if f.recovered_s is None),
            **self.memory.summary(),
            "serve_starts": self.serve.starts if self.serve else 0,
        }
