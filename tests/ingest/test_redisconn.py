"""Redis calls that honour cancellation, and the check of what a Redis server keeps on disk,
against real redis-server processes of our own (the shared one is never reconfigured)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tests.services import _free_port
from trading_helper.ingest.redisconn import (
    SOCKET_TIMEOUT_S,
    cancellable,
    check_redis_durability,
    redis_client,
)


@asynccontextmanager
async def own_redis(*options: str) -> AsyncIterator[str]:
    server = shutil.which("redis-server")
    assert server, "redis-server is needed for this test (apt-get install redis-server)"
    workdir = tempfile.mkdtemp(prefix="th-redis-")
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        workdir,
        *options,
        stdout=asyncio.subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = aioredis.Redis.from_url(url)
        try:
            for _ in range(500):
                try:
                    if await client.ping():
                        break
                except (OSError, RedisError):
                    await asyncio.sleep(0.02)
        finally:
            await client.aclose()
        yield url
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


async def test_cancellation_ends_the_wait_even_when_the_call_ignores_it() -> None:
    """The failure seen in redis-py: a read that swallows its task's cancellation and reads on."""
    release = asyncio.Event()

    async def stubborn_read() -> str:
        while True:
            try:
                await release.wait()
                return "reply"
            except asyncio.CancelledError:
                continue  # what the library did: the cancellation is lost, the read goes on

    async def caller() -> str:
        return await cancellable(stubborn_read())

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done, "the caller did not end on its cancellation"
    assert task.cancelled()
    release.set()  # the abandoned read ends by itself
    await asyncio.sleep(0.01)
    assert await cancellable(stubborn_read()) == "reply"


async def test_the_client_bounds_every_read(redis_url: str) -> None:
    client = redis_client(redis_url)
    try:
        assert client.connection_pool.connection_kwargs["socket_timeout"] == SOCKET_TIMEOUT_S
        assert SOCKET_TIMEOUT_S > 1.0  # larger than any XREADGROUP block of the writer (50 ms)
        assert await cancellable(client.ping())
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("options", "persistence"),
    [
        (("--appendonly", "no", "--save", ""), "none"),
        (("--appendonly", "no", "--save", "3600 1"), "snapshots"),
        (("--appendonly", "yes", "--save", ""), "aof"),
    ],
)
async def test_durability_is_read_from_the_server(
    options: tuple[str, ...], persistence: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with own_redis(*options) as url:
        client = redis_client(url)
        try:
            found = await check_redis_durability(client)
        finally:
            await client.aclose()
    assert (found.persistence, found.source) == (persistence, "config")
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "Redis" in r.getMessage()]
    assert len(warned) == (0 if persistence == "aof" else 1)
    if persistence == "none":
        assert found.keeps_nothing and "keeps nothing on disk" in warned[0].getMessage()


async def test_durability_falls_back_to_info_when_config_is_refused() -> None:
    # managed Redis services refuse CONFIG; renaming it away does the same here
    async with own_redis("--appendonly", "yes", "--save", "", "--rename-command", "CONFIG", "") as url:
        client = redis_client(url)
        try:
            found = await check_redis_durability(client)
        finally:
            await client.aclose()
    assert (found.persistence, found.source) == ("aof", "info")


_COMMANDS = [
    ("HSET", "th:quotes", *[x for i in range(500) for x in (str(i), bytes(range(i % 256)) * 2)]),
    ("XADD", "th:ticks", "1-1", b"t", b"\x00" * 200_000),  # a large value: redis-py's own path
    ("CONFIG GET", "appendonly"),  # a command name of two words
    (b"CLIENT SETNAME", "th-lease:host:1"),
    ("SET", "k", 0.1, "PX", 5000),  # numbers: redis-py's formatting
    ("SET", "ключ", "значение"),
]


@pytest.mark.parametrize("args", _COMMANDS, ids=lambda a: str(a[0]))
def test_commands_are_packed_as_redis_py_packs_them(args: tuple[object, ...]) -> None:
    fast = redis_client("redis://127.0.0.1:1/0").connection_pool.connection_class()
    plain = aioredis.Connection()
    assert type(fast) is not aioredis.Connection and getattr(fast, "packs_in_c", False)
    assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))


async def test_a_client_packing_in_c_speaks_to_a_real_redis(redis_url: str) -> None:
    client = redis_client(redis_url)
    quotes = {str(i): bytes([i % 256]) * 280 for i in range(2000)}
    try:
        await client.hset("th:test:packing", mapping=quotes)  # type: ignore[arg-type]
        assert await client.hgetall("th:test:packing") == {k.encode(): v for k, v in quotes.items()}
        assert (await client.config_get("appendonly")).keys() == {"appendonly"}
    finally:
        await client.delete("th:test:packing")
        await client.aclose()
