"""What ``trading-helper status`` shows: the service's published status and the stream backlog."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from trading_helper.config import Settings
from trading_helper.errors import BufferUnavailable
from trading_helper.ingest import keys
from trading_helper.ingest.redisconn import REDIS_FAILURES


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def encode_status(status: Mapping[str, Any]) -> dict[str, str]:
    """The service's status as a Redis hash: each field its JSON, so readers get numbers,
    booleans, null and objects back as they were (``str()`` would give ``'True'``, ``"{'a': 1}"``)."""
    return {k: json.dumps(v, default=str) for k, v in status.items()}


def decode_status(raw: Mapping[bytes | str, bytes | str]) -> dict[str, Any]:
    """The hash written by :func:`encode_status`; a field that is not JSON stays text."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        text = _text(value)
        try:
            out[_text(key)] = json.loads(text)
        except ValueError:
            out[_text(key)] = text
    return out


async def read_status(settings: Settings) -> dict[str, Any]:
    from trading_helper.cluster.status import cluster_status

    client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    try:
        published = decode_status(await client.hgetall(keys.STATUS))
        cluster = await cluster_status(client, settings.TICK_STREAM)
        length = await client.xlen(settings.TICK_STREAM)
        try:
            groups = await client.xinfo_groups(settings.TICK_STREAM)
        except ResponseError:  # no stream yet
            groups = []
    except REDIS_FAILURES as exc:
        raise BufferUnavailable(
            f"cannot read status from Redis (REDIS_URL): {exc}; for a demo without Redis, "
            "run status in the folder the demo runs in"
        ) from exc
    finally:
        await client.aclose()
    writer = next(
        (g for g in groups if g.get("name") in (keys.WRITER_GROUP, keys.WRITER_GROUP.encode())), None
    )
    note = (
        {}
        if published or cluster
        else {
            "note": "no ingest service has published its status to this Redis (REDIS_URL); "
            "for a demo without Redis, run status in the folder the demo runs in"
        }
    )
    return {
        **published,
        **note,
        "stream": settings.TICK_STREAM,
        "stream_entries": length,
        "stream_cap": settings.STREAM_MAX_ENTRIES,
        "writer_pending_entries": writer.get("pending") if writer else None,
        "writer_lag_entries": writer.get("lag") if writer else None,
        **({"cluster": cluster} if cluster else {}),
    }
