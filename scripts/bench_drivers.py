"""asyncpg vs psycopg 3: binary COPY of the same tick rows into the same table, in one run.

How the storage driver was chosen (issue: storage core). Not part of the package: run with
``pip install 'psycopg[binary]' asyncpg`` in any venv, against a database migrated by
``trading-helper db migrate`` (it needs tick_data's columns):
``DSN=postgresql://postgres@127.0.0.1:5432/trading_data python scripts/bench_drivers.py``
"""
import asyncio, json, os, time
from datetime import UTC, datetime, timedelta
import asyncpg, psycopg

DSN = os.environ.get("DSN", "postgresql://postgres@127.0.0.1:5432/trading_data")
COLS = ("time", "instrument_id", "ltp", "last_qty", "volume", "volume_delta", "avg_price", "open_interest",
        "bid_price", "bid_qty", "ask_price", "ask_qty", "received_at")
N = 300_000
now = datetime.now(UTC)
rows = [(now + timedelta(microseconds=i), i % 1000, 100.0 + i % 7, 5, i, 1, 100.0, 1000, 99.9, 10, 100.1, 12, now)
        for i in range(N)]

async def a():
    c = await asyncpg.connect(DSN)
    await c.execute("DROP TABLE IF EXISTS drv; CREATE UNLOGGED TABLE drv (LIKE tick_data); CREATE INDEX ON drv (instrument_id, time)")
    t = time.perf_counter()
    for i in range(0, N, 10_000):
        await c.copy_records_to_table("drv", records=rows[i:i+10_000], columns=COLS)
    r = N / (time.perf_counter() - t)
    await c.close()
    return r

async def p():
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as c:
        await c.execute("DROP TABLE IF EXISTS drv; CREATE UNLOGGED TABLE drv (LIKE tick_data); CREATE INDEX ON drv (instrument_id, time)")
        t = time.perf_counter()
        for i in range(0, N, 10_000):
            async with c.cursor() as cur:
                async with cur.copy(f"COPY drv ({','.join(COLS)}) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["timestamptz", "int4", "float8", "int4", "int8", "int8", "float8", "int8", "float8", "int4", "float8", "int4", "timestamptz"])
                    for row in rows[i:i+10_000]:
                        await cp.write_row(row)
        return N / (time.perf_counter() - t)

async def main():
    out = {}
    for k in range(2):
        out.setdefault("asyncpg_rows_per_s", []).append(round(await a()))
        out.setdefault("psycopg3_rows_per_s", []).append(round(await p()))
    print(json.dumps(out))
asyncio.run(main())
