"""ARCHIVE_FO_TICKS=parquet: the service's hourly archive job writes the ticks of futures and
options to one Parquet file per final UTC day (and nothing of cash instruments), once each."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pyarrow.parquet as pq

from trading_helper.config import Settings
from trading_helper.export.archive import FoArchive, tick_file
from trading_helper.export.columns import schema
from trading_helper.models import Instrument
from trading_helper.storage import sql_export
from trading_helper.storage.instruments import lookup_tokens, sync_instruments


async def test_final_tick_days_of_fo_contracts_go_to_parquet_once(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    items = [
        Instrument("NFO", "PQARCH24FUT", "NFO-FUT", "FUT", expiry=date.today(), broker_ids={"sim": "PQF"}),
        Instrument(
            "NFO",
            "PQARCH24100CE",
            "NFO-OPT",
            "CE",
            expiry=date.today(),
            strike=100.0,
            option_type="CE",
            broker_ids={"sim": "PQC"},
        ),
        Instrument("NSE", "PQARCHEQ", "NSE", "EQ", broker_ids={"sim": "PQE"}),
    ]
    async with db_pool.acquire() as conn:
        await sync_instruments(conn, "sim", items, mark_expired=False)
        ids = await lookup_tokens(conn, "sim", ["PQF", "PQC", "PQE"])
    now = datetime.now(UTC)
    days = [(now - timedelta(days=n)).replace(hour=0, minute=0, second=0, microsecond=0) for n in (9, 8, 3)]
    await db_pool.execute(
        "SELECT ensure_tick_partitions($1::timestamptz, $2::timestamptz)", days[0], days[-1]
    )
    for day in days:
        await db_pool.execute(sql_export.SYNTHETIC_TICKS, list(ids.values()), day, 500)

    settings = Settings(ARCHIVE_FO_TICKS="parquet", ARCHIVE_DIR=tmp_path / "archive")
    written = await FoArchive(settings, db_pool).run(now)
    # the days older than 6 days, not the one 3 days old (ticks may still arrive for it)
    assert written == [tick_file(settings.ARCHIVE_DIR, d) for d in days[:2]]
    assert await db_pool.fetchval("SELECT ticks FROM archive_policy") == "parquet"
    for path in written:
        table = pq.read_table(path)
        assert table.schema == schema("ticks", "utc")
        assert table.num_rows == 2 * 500
        assert set(table.column("instrument").to_pylist()) == {"NFO:PQARCH24FUT", "NFO:PQARCH24100CE"}

    assert await FoArchive(settings, db_pool).run(now) == []  # each day once
    later = await FoArchive(settings, db_pool).run(now + timedelta(days=4))
    assert later == [tick_file(settings.ARCHIVE_DIR, days[2])]
