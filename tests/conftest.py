"""Shared fixtures: real PostgreSQL and Redis, never mocks (see tests/services.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.db import fresh_database
from tests.services import DEFAULT_PG, DEFAULT_REDIS
from tests.timescale.engine import EngineUnavailable, TimescaleEngine
from trading_helper.storage.migrate import current_flavour


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """A temporary folder of this run's own, removed at its end: under pytest's shared default
    (/tmp/pytest-of-USER, the last three runs kept) a run started beside another one (a second
    checkout, a helper's run) can delete the folders the first one's embedded PostgreSQL and
    fake servers still use."""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        base = tempfile.mkdtemp(prefix="th-pytest-")
        config.option.basetemp = base
        config.add_cleanup(lambda: shutil.rmtree(base, ignore_errors=True))


@pytest.fixture(scope="session")
def admin_dsn() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS)


@pytest.fixture(scope="module")
async def db_dsn(admin_dsn: str) -> AsyncIterator[str]:
    """A freshly migrated database for this test module, of the test flavour (tests/db.py: the
    server's, or TEST_DB_FLAVOUR)."""
    async with fresh_database(admin_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def db_flavour(db_dsn: str) -> str:
    """The schema flavour of this module's database: postgres or timescale."""
    conn = await asyncpg.connect(db_dsn)
    try:
        return str(await current_flavour(conn))
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _only_on_its_flavour(request: pytest.FixtureRequest) -> None:
    """``@pytest.mark.flavour("postgres", "why")``: skipped, with the reason, on the other flavour."""
    marker = request.node.get_closest_marker("flavour")
    if marker is None:
        return
    name, reason = marker.args
    flavour = request.getfixturevalue("db_flavour")
    if flavour != name:
        pytest.skip(f"{name} flavour only ({flavour} here): {reason}")


@pytest.fixture(scope="module")
async def db_pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="module")
def timescale_engine() -> Iterator[TimescaleEngine]:
    """A real TimescaleDB engine (PGlite + TimescaleDB in Node) with the project's migrations applied.
    Fails (never skips) with what to install when Node or the package is missing."""
    try:
        engine = TimescaleEngine()
    except EngineUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield engine
    finally:
        engine.close()
