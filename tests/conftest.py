"""Shared fixtures: real PostgreSQL and Redis, never mocks (see tests/services.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.db import fresh_database
from tests.services import DEFAULT_PG, DEFAULT_REDIS


@pytest.fixture(scope="session")
def admin_dsn() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS)


@pytest.fixture(scope="module")
async def db_dsn(admin_dsn: str) -> AsyncIterator[str]:
    """A freshly migrated plain-PostgreSQL database for this test module."""
    async with fresh_database(admin_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def db_pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()
