"""storage/pgcopy.py's binary arrays and single rows, checked against PostgreSQL itself."""

from __future__ import annotations

import asyncpg
import numpy as np
import pytest

from trading_helper.storage.pgcopy import Kind, array_value, one_row


@pytest.mark.parametrize(
    ("kind", "sql_type", "values"),
    [
        (Kind.INT4, "integer", [7, -1, 2**31 - 1, -(2**31)]),
        (Kind.INT8, "bigint", [1_800_000_000_000_000, -1, 0, 2**63 - 1]),
        (Kind.INT8, "bigint", []),
    ],
)
async def test_an_array_value_is_what_array_send_writes(
    db_pool: asyncpg.Pool, kind: Kind, sql_type: str, values: list[int]
) -> None:
    sent = await db_pool.fetchval(f"SELECT array_send($1::{sql_type}[])", values)
    ours = array_value(kind, np.array(values, dtype=np.int64))
    if values:
        assert ours == sent
    else:  # PostgreSQL sends an empty array with no dimensions; ours has one of length 0
        async with db_pool.acquire() as conn:
            await conn.execute(f"CREATE TEMP TABLE empty_array (a {sql_type}[])")
            await conn.copy_to_table("empty_array", source=memoryview(one_row([ours])), format="binary")
            assert await conn.fetchval("SELECT cardinality(a) FROM empty_array") == 0


def test_an_int4_array_refuses_a_value_it_would_wrap() -> None:
    with pytest.raises(OverflowError, match="out of the range of integer"):
        array_value(Kind.INT4, np.array([1, 2**31], dtype=np.int64))
    with pytest.raises(ValueError, match="no binary array of double precision"):
        array_value(Kind.FLOAT8, np.array([1.0]))


async def test_one_row_copies_text_and_arrays_in(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE one (name text, ids integer[], big bigint[])")
        payload = one_row(
            [
                "ströme:1".encode(),
                array_value(Kind.INT4, np.array([3, 1, 2])),
                array_value(Kind.INT8, np.array([-1, 2**40])),
            ]
        )
        await conn.copy_to_table("one", source=memoryview(payload), format="binary")
        row = await conn.fetchrow("SELECT * FROM one")
    assert dict(row) == {"name": "ströme:1", "ids": [3, 1, 2], "big": [-1, 2**40]}
