"""The one mapping of database and Redis failures to the error tree (storage/db.py::db_errors,
ingest/redisconn.py::redis_errors), on real servers: each failure is the tree's error, raised from
the original, and should_retry() is the one retry decision."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import asyncpg
import pytest

from trading_helper.errors import (
    BrokerUnavailable,
    BufferUnavailable,
    DatabaseBusy,
    DatabaseUnavailable,
    LoginRequired,
    QueryFailed,
    QueryTimeout,
    RateLimited,
    StorageError,
    UnknownInstrument,
    should_retry,
)
from trading_helper.ingest.redisconn import redis_client, redis_errors
from trading_helper.storage.db import db_errors
from trading_helper.storage.sqlstate import retryable


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def conn(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_dsn)
    await connection.execute("""
        CREATE TEMP TABLE refuses (n integer CHECK (n > 0));
        CREATE FUNCTION pg_temp.disk_full() RETURNS void LANGUAGE plpgsql
            AS $$ BEGIN RAISE EXCEPTION 'no space left' USING ERRCODE = '53100'; END $$;
    """)
    try:
        yield connection
    finally:
        await connection.close()


async def test_a_database_that_is_not_there_is_unavailable_and_retried() -> None:
    with pytest.raises(DatabaseUnavailable) as caught:
        with db_errors("reading instruments"):
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{closed_port()}/x", timeout=2)
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.message.startswith("reading instruments: ")
    assert should_retry(caught.value)


async def test_a_refusal_for_now_is_busy_and_retried(conn: asyncpg.Connection) -> None:
    with pytest.raises(DatabaseBusy) as caught:
        with db_errors("writing"):
            await conn.execute("SELECT pg_temp.disk_full()")
    assert caught.value.sqlstate == "53100" and "no space left" in caught.value.message
    assert type(caught.value) is DatabaseBusy and should_retry(caught.value)
    assert isinstance(caught.value.__cause__, asyncpg.DiskFullError)


async def test_a_statement_past_its_timeout_is_a_query_timeout(conn: asyncpg.Connection) -> None:
    await conn.execute("SET statement_timeout = '50ms'")
    with pytest.raises(QueryTimeout) as caught:
        with db_errors("reading candles"):
            await conn.execute("SELECT pg_sleep(5)")
    assert caught.value.sqlstate == "57014" and caught.value.code == "query_timeout"
    assert isinstance(caught.value, DatabaseBusy) and should_retry(caught.value)


async def test_a_refused_row_or_a_missing_table_fails_for_good(conn: asyncpg.Connection) -> None:
    with pytest.raises(QueryFailed) as row:
        with db_errors("storing"):
            await conn.execute("INSERT INTO refuses VALUES (-1)")
    assert row.value.sqlstate == "23514" and not should_retry(row.value)
    with pytest.raises(QueryFailed) as table:
        with db_errors("reading"):
            await conn.fetch("SELECT * FROM no_such_table")
    assert table.value.sqlstate == "42P01" and "no_such_table" in table.value.message
    assert not should_retry(table.value)
    assert retryable(table.value.__cause__ or table.value, "reading") is None  # the writer's view agrees


async def test_the_trees_own_errors_pass_unchanged() -> None:
    original = UnknownInstrument("no such instrument")
    with pytest.raises(UnknownInstrument) as caught:
        with db_errors("resolving"):
            raise original
    assert caught.value is original


async def test_a_redis_that_is_not_there_is_buffer_unavailable_and_retried() -> None:
    client = redis_client(f"redis://127.0.0.1:{closed_port()}/0", socket_connect_timeout=1)
    try:
        with pytest.raises(BufferUnavailable) as caught:
            with redis_errors("reading the quote"):
                await client.ping()
    finally:
        await client.aclose()
    assert caught.value.code == "redis_unavailable" and caught.value.__cause__ is not None
    assert caught.value.message.startswith("reading the quote: ") and should_retry(caught.value)


def test_should_retry_is_the_one_decision() -> None:
    assert [
        should_retry(e)
        for e in (
            BrokerUnavailable("5xx"),
            RateLimited("429"),
            LoginRequired("403"),
            StorageError("no schema"),
            ValueError("not ours"),
        )
    ] == [True, True, False, False, False]
