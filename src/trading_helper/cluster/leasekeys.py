"""The names of the lease keys in Redis (``th:lease:<role>:<name>``, ``th:members:<role>``), and
who holds a lease now: what :mod:`.lease` writes and the status, the bench and writers read."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence

import redis.asyncio as aioredis

from trading_helper.ingest.redisconn import reply_text


def lease_key(role: str, name: str) -> str:
    return f"th:lease:{role}:{name}"


def members_key(role: str) -> str:
    return f"th:members:{role}"


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def lease_owners(redis: aioredis.Redis, role: str, names: Sequence[str]) -> dict[str, str | None]:
    """Who holds each lease now (the owner id, None: nobody)."""
    if not names:
        return {}
    values = await redis.mget([lease_key(role, n) for n in names])
    return {n: reply_text(v).partition("#")[0] if v else None for n, v in zip(names, values, strict=True)}
