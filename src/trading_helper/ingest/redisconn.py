"""The one way to build the ingest's Redis client, the one mapping of Redis failures to the error
tree (:func:`redis_errors`), Redis calls that honour cancellation, and the check of what the
Redis server keeps on disk.

Why by hand: redis-py (8.1 with hiredis) was seen to swallow a task's cancellation inside a read
after a Redis restart (the task stayed ``cancelling`` in ``read_from_socket`` for ever, NOTES.md).
Two things make every read bounded: a socket timeout on the client, larger than any XREADGROUP
block we use, so no read waits for ever; and :func:`cancellable`, which awaits the call from a
separate task, so the caller's cancellation takes effect at once whatever the library does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis
from hiredis import pack_command as hiredis_pack  # redis[hiredis]: a dependency
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from trading_helper.errors import BufferUnavailable
from trading_helper.redact import redact_dsn

log = logging.getLogger(__name__)

T = TypeVar("T")

#: no Redis reply may take longer (the writer blocks at most 50 ms in XREADGROUP)
SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0


def redis_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """A client whose reads and connects are bounded in time (for ``serve``, ``demo`` and the writer)."""
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
    }
    options.update(kwargs)
    client = aioredis.Redis.from_url(url, **options)
    pool = client.connection_pool
    pool.connection_class = packing_in_c(pool.connection_class)
    return client


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def packing_in_c(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` (the URL's connection class: TCP, TLS, Unix socket) packing commands of small
    arguments with hiredis, as redis-py's synchronous client does and its asyncio client does not.

    Why: redis-py's asyncio ``pack_command`` joins each argument into the buffer in Python; the
    receiver's HSET of the latest quotes (2,000 fields of ~280 bytes per frame of a shard) took
    7.3 ms there against 1.4 ms in hiredis (py-spy on a collector at 24,000 ticks/s: 49 % of its
    busy samples in redis-py's pack_command, 6 % after).
    A command with a large value (a frame's payload) or a number keeps redis-py's path, which
    hands the value to the socket without copying it and formats numbers its own way."""
    if getattr(cls, "packs_in_c", False):
        return cls
    if cls not in _PACKING:
        _PACKING[cls] = type(f"{cls.__name__}PackingInC", (_PackingInC, cls), {})
    return _PACKING[cls]


class _PackingInC(AbstractConnection):
    packs_in_c = True

    def pack_command(self, *args: Any) -> list[bytes]:
        cutoff = self._buffer_cutoff
        if not all((type(a) is bytes and len(a) <= cutoff) or type(a) is str for a in args):
            return super().pack_command(*args)
        # the command name may hold several words ('CONFIG GET'): Redis wants them apart
        head = args[0].encode() if isinstance(args[0], str) else args[0]
        if b" " in head:
            args = (*head.split(), *args[1:])
        return [hiredis_pack(args)]  # only bytes and str here: hiredis takes them all


#: what a Redis call may raise (redis-py's errors, and socket errors it lets through)
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError)


@contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Raise a failed Redis call of the block as :class:`BufferUnavailable` (retryable) ``from``
    the original; ``what`` starts the message. A reply Redis refuses (``ResponseError``, e.g.
    NOGROUP) is a RedisError too: callers that decide on one catch it inside the block."""
    try:
        yield
    except REDIS_FAILURES as exc:
        reason = redact_dsn(str(exc).strip()) or type(exc).__name__
        raise BufferUnavailable(f"{what}: {reason}") from exc


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # an abandoned call's error is not "never retrieved"


async def cancellable(call: Awaitable[T]) -> T:
    """Await ``call`` (a Redis command) so that cancelling the caller ends the wait at once.

    The call runs as its own task; the caller waits on :func:`asyncio.wait`, whose waiter no
    library can hold back. On cancellation the call is cancelled too and left to end by itself
    (within the socket timeout at the latest)."""
    task = asyncio.ensure_future(call)
    try:
        await asyncio.wait({task})
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise
    return task.result()


Persistence = Literal["aof", "snapshots", "none", "unknown"]


@dataclass(slots=True, frozen=True)
class RedisDurability:
    """What a Redis restart would keep of the tick stream."""

    #: aof: every write is logged; snapshots: the writes since the last snapshot are lost on a
    #: restart; none: nothing is kept; unknown: the server did not say
    persistence: Persistence
    #: where it was read: "config" (CONFIG GET), "info" (INFO persistence, when CONFIG is refused) or ""
    source: str
    detail: str

    @property
    def keeps_nothing(self) -> bool:
        return self.persistence == "none"

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def reply_text(value: object) -> str:
    """A Redis reply as text (bytes decoded, anything else as ``str``)."""
    return value.decode() if isinstance(value, bytes) else str(value)


async def check_redis_durability(redis: aioredis.Redis) -> RedisDurability:
    """Read the server's persistence settings and log a warning when a restart would lose the
    backlog. Managed Redis often refuses CONFIG: then INFO persistence says whether AOF is on."""
    try:
        found = await cancellable(redis.config_get("appendonly", "save"))
        config = {reply_text(k): reply_text(v) for k, v in found.items()}
        if "appendonly" not in config:
            raise RedisError("CONFIG GET returned no appendonly")
        aof = config["appendonly"] == "yes"
        save = config.get("save", "").strip()
        detail = f"appendonly {config['appendonly']}, save '{save}'"
        result = RedisDurability("aof" if aof else "snapshots" if save else "none", "config", detail)
    except Exception:  # advisory: CONFIG refused (managed Redis), or a stand-in without it
        try:
            info = await cancellable(redis.info("persistence"))
            aof_enabled = reply_text(info.get("aof_enabled", "")) if isinstance(info, dict) else ""
        except Exception as exc:
            result = RedisDurability("unknown", "", f"persistence settings unreadable: {exc}")
        else:
            if aof_enabled == "1":
                result = RedisDurability("aof", "info", "aof_enabled 1")
            elif aof_enabled == "0":
                result = RedisDurability(
                    "unknown", "info", "aof_enabled 0; snapshot schedule unknown (CONFIG refused)"
                )
            else:
                result = RedisDurability("unknown", "info", "INFO persistence has no aof_enabled")
    if result.persistence == "none":
        log.warning(
            "Redis keeps nothing on disk (%s): a Redis restart loses every received tick not yet "
            "written to the database. Turn on 'appendonly yes'.",
            result.detail,
        )
    elif result.persistence == "snapshots":
        log.warning(
            "Redis keeps only snapshots (%s): a restart loses the ticks received since the last one "
            "and not yet written; 'appendonly yes' keeps them all",
            result.detail,
        )
    elif result.persistence == "unknown":
        log.warning("cannot tell whether Redis keeps received ticks on disk (%s)", result.detail)
    return result
