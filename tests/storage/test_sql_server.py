"""The statements that take no bound parameter (storage/sql_server.py) on the real server: a
database name with a quote, a space and capitals is created and dropped as exactly that name,
and a literal with quotes round-trips."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from trading_helper.storage import sql_server


async def test_a_database_name_is_quoted_as_an_identifier(admin_dsn: str) -> None:
    name = f'th_test "Quoted" {uuid.uuid4().hex[:8]}'
    conn = await asyncpg.connect(admin_dsn)
    try:
        assert not await conn.fetchval(sql_server.DATABASE_EXISTS, name)
        await conn.execute(sql_server.create_database(name))
        try:
            assert await conn.fetchval(sql_server.DATABASE_EXISTS, name) == 1
        finally:
            await conn.execute(sql_server.drop_database(name))
        assert not await conn.fetchval(sql_server.DATABASE_EXISTS, name)
    finally:
        await conn.close()


async def test_a_literal_round_trips(admin_dsn: str) -> None:
    text = "it's a \\ back'slash'' and $1"
    conn = await asyncpg.connect(admin_dsn)
    try:
        assert await conn.fetchval(f"SELECT {sql_server.quote_literal(text)}::text") == text
        assert await conn.fetchval(sql_server.PING) == 1
    finally:
        await conn.close()
    with pytest.raises(ValueError, match="NUL"):
        sql_server.quote_literal("a\0b")
