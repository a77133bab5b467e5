"""Shared fixtures: real PostgreSQL and Redis, never mocks (see tests/services.py)."""

from __future__ import annotations

import os

import pytest

from tests.services import DEFAULT_PG, DEFAULT_REDIS


@pytest.fixture(scope="session")
def admin_dsn() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS)
