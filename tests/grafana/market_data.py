"""Simulated market data for the dashboard queries: ticks through the real writer, then the rollup.

Four instruments, ticks every 10 s over the last three hours and over the same hours one day
earlier (so daily candles have a previous close), with bid/ask, cumulative volume and OI, one
volume spike in the newest minutes, and capture periods in ``live_coverage``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from tests.grafana.option_data import write_snapshots
from tests.ingest.direct_writer import DirectWriter
from tests.storage.helpers import make_instruments, reset_market_data
from trading_helper.models import Tick
from trading_helper.storage.catchup import catch_up
from trading_helper.storage.jobs import record_run
from trading_helper.storage.migrate import current_flavour

TICK_EVERY = timedelta(seconds=10)
SESSION = timedelta(hours=3)
SPIKE_MINUTES = 3


@dataclass(frozen=True)
class Market:
    instrument_ids: list[int]
    spiking_id: int
    start: datetime  # the first tick (one day before the newest session)
    end: datetime  # the newest tick
    ticks: int


def _ticks_for(
    iid: int,
    n: int,
    start: datetime,
    end: datetime,
    *,
    base: float,
    spike_from: datetime | None,
    now: datetime,
) -> list[Tick]:
    ticks, volume, t, step = [], 0, start, 0
    while t <= end:
        qty = 10 + (step * 7 + n * 3) % 40
        if spike_from is not None and t >= spike_from:
            qty *= 50
        volume += qty
        price = round(base * (1 + 0.01 * math.sin(step / 25 + n)) + 0.05 * (step % 3), 2)
        ticks.append(
            Tick(
                instrument_id=iid,
                exchange_ts=t,
                received_ts=t + timedelta(milliseconds=300 + 97 * (step % 40)),
                last_price=price,
                last_quantity=qty,
                volume=volume,
                open_interest=100_000 + 10 * step,
                bid_price=price - 0.05,
                bid_quantity=100 + step % 17,
                ask_price=price + 0.05,
                ask_quantity=120 + step % 13,
            )
        )
        t += TICK_EVERY
        step += 1
    assert ticks[-1].exchange_ts <= now
    return ticks


async def fill_market(pool: asyncpg.Pool) -> Market:
    await reset_market_data(pool)
    ids = await make_instruments(pool, 4, prefix="GRAF")
    now = datetime.now(UTC).replace(microsecond=0)
    end = now - timedelta(minutes=1)
    writer = await DirectWriter.open(pool)
    total = 0
    for day_offset in (timedelta(days=1), timedelta(0)):
        day_end = end - day_offset
        for n, iid in enumerate(ids):
            spike = (
                day_end - timedelta(minutes=SPIKE_MINUTES)
                if (day_offset == timedelta(0) and n == 0)
                else None
            )
            ticks = _ticks_for(
                iid,
                n,
                day_end - SESSION,
                day_end,
                base=100.0 * (n + 1) * (1.03 if day_offset else 1.0),
                spike_from=spike,
                now=now,
            )
            result = await writer.write(ticks)
            assert result.written == len(ticks), result.rejected
            total += result.written
    async with pool.acquire() as conn:
        await catch_up(conn, await current_flavour(conn), fallback=None)
        await write_snapshots(conn, ids[0], end)
        # as the service records its own rollup run (plain PostgreSQL; job_status shows it)
        await record_run(conn, "refresh_candles", "refresh", "candles", 5.0, now, None)
        await conn.executemany(
            "INSERT INTO live_coverage (instrument_id, broker, period, open) VALUES ($1, 'sim', tstzrange($2, $3), $4)",
            [
                row
                for iid in ids
                for row in (
                    (iid, end - timedelta(days=1) - SESSION, end - timedelta(days=1), False),
                    (iid, end - SESSION, now, True),
                )
            ],
        )
        # one alert that fired and was delivered on its second attempt (the alert-history panel)
        rule_id = await conn.fetchval(
            "INSERT INTO alert_rules (instrument_id, spec) VALUES ($1, $2::jsonb) RETURNING id",
            ids[0],
            '{"on": "tick", "left": "ltp", "op": ">", "value": 100, "name": "GRAF over 100"}',
        )
        trigger_id = await conn.fetchval(
            "INSERT INTO alert_triggers (rule_id, idempotency_key, observed_at, fired_at, payload)"
            " VALUES ($1, $2, $3, $3, $4::jsonb) RETURNING id",
            rule_id,
            f"graf-{rule_id}",
            end - timedelta(minutes=2),
            '{"name": "GRAF over 100", "condition": "ltp > 100 on tick", "left": 101.5}',
        )
        await conn.executemany(
            "INSERT INTO alert_deliveries (trigger_id, channel, target, attempt, ok, status)"
            " VALUES ($1, 'webhook', 'http://127.0.0.1:9/hook', $2, $3, $4)",
            [(trigger_id, 1, False, 503), (trigger_id, 2, True, 204)],
        )
    return Market(
        instrument_ids=ids, spiking_id=ids[0], start=end - timedelta(days=1) - SESSION, end=end, ticks=total
    )
