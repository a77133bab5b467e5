"""Presence (cluster/presence.py): an owner whose lease connections are gone from CLIENT LIST is
dead once missing for the grace, by the watcher's looks and by the step's own; a reconnect in
time, or CLIENT refused, makes nobody dead. Who is present, read off a real Redis's CLIENT LIST,
equals what redis-py's own parser of it finds."""

from __future__ import annotations

import redis.asyncio as aioredis

from trading_helper.cluster.presence import PRESENCE_GRACE_S, Presence, named_client


def test_an_owner_gone_is_reported_once_after_the_grace_and_then_counts_as_dead() -> None:
    p = Presence("me")
    assert not p.look({"me", "a", "b"}, 0.0)
    assert not p.look({"me", "b"}, 0.1)  # a gone: not yet dead
    assert not p.dead("a", {"me", "b"}, 0.1 + PRESENCE_GRACE_S / 2)
    assert p.look({"me", "b"}, 0.11 + PRESENCE_GRACE_S)  # missing the grace: the step is woken
    assert not p.look({"me", "b"}, 0.2 + PRESENCE_GRACE_S)  # once
    assert p.dead("a", {"me", "b"}, 0.2 + PRESENCE_GRACE_S)  # and the step takes its leases
    assert not p.dead("b", {"me", "b"}, 0.2 + PRESENCE_GRACE_S)


def test_an_owner_back_within_the_grace_is_not_dead_and_can_be_reported_again_later() -> None:
    p = Presence("me")
    p.look({"me", "a"}, 0.0)
    p.look({"me"}, 0.1)
    assert not p.look({"me", "a"}, 0.1 + PRESENCE_GRACE_S / 2)  # reconnected in time
    assert not p.look({"me", "a"}, 0.2 + PRESENCE_GRACE_S)
    assert not p.look({"me"}, 1.0)
    assert p.look({"me"}, 1.01 + PRESENCE_GRACE_S)  # gone again: reported again


def test_this_process_and_a_redis_refusing_client_are_never_dead() -> None:
    p = Presence("me")
    p.look({"me"}, 0.0)
    assert not p.look(set(), 0.0 + 2 * PRESENCE_GRACE_S)
    assert not p.dead("me", set(), 1.0)
    refused = Presence("me")
    refused._absent = None  # what probe() sets where CLIENT LIST is refused
    assert not refused.look(set(), 1.0)
    assert not refused.dead("a", None, 1.0)


async def test_present_owners_are_the_names_redis_py_reads_off_client_list(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    owners = ["vm:101:a1b2c3", "host.example:7:ffffff", "x"]
    named = [named_client(redis, o) for o in owners]
    plain = aioredis.Redis.from_url(redis_url, client_name="th-leaseX:not-ours")
    try:
        for client in [*named, plain]:
            await client.ping()
        present = await Presence("me").present(redis)
        assert present is not None and set(owners) <= present
        parsed = await redis.client_list(_type="normal")
        prefix = "th-lease:"
        assert present == {c["name"][len(prefix) :] for c in parsed if c["name"].startswith(prefix)}
    finally:
        for client in [*named, plain]:
            await client.aclose()
            await client.connection_pool.disconnect()  # a named client's pool is its own
        await redis.aclose()
