"""The shard planner: subscribed instruments -> shards (account, connection), within each
broker's caps. Pure: no I/O, the same input gives the same plan.

* caps: Kite carries 3000 instruments on each of 3 connections per API key; Fyers 5000 symbols
  per app (one data socket); the simulator has no cap that matters.
* round-robin: instruments without a place are given, in id order, to the least-loaded shard
  with room (ties in shard order), so a fresh plan deals them out like cards.
* manual pinning: an instrument pinned to an account (or to one of its connections) goes there
  while that account exists and has room; otherwise it is placed like any other and listed in
  ``unhonoured_pins``.
* stable rebalancing: given the previous plan, every instrument whose shard still exists and has
  room stays where it was, so adding an account moves nothing and losing one moves only the
  instruments it carried. Instruments beyond every cap are listed in ``unassigned`` (not dropped
  silently; the status shows them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trading_helper.brokers.fyers.constants import SYMBOL_LIMIT as FYERS_SYMBOL_LIMIT
from trading_helper.brokers.kite.constants import MAX_CONNECTIONS, MAX_TOKENS_PER_CONNECTION


@dataclass(frozen=True, slots=True)
class Caps:
    connections: int
    per_connection: int

    @property
    def per_account(self) -> int:
        return self.connections * self.per_connection


CAPS: dict[str, Caps] = {
    "kite": Caps(MAX_CONNECTIONS, MAX_TOKENS_PER_CONNECTION),
    "fyers": Caps(1, FYERS_SYMBOL_LIMIT),
    "sim": Caps(1, 1_000_000),
}


@dataclass(frozen=True, slots=True, order=True)
class Shard:
    broker: str
    account: str
    connection: int

    @property
    def key(self) -> str:
        """``kite:a:0``: its name in leases, stream names and the status."""
        return f"{self.broker}:{self.account}:{self.connection}"

    @classmethod
    def parse(cls, key: str) -> Shard:
        try:
            broker, account, connection = key.split(":")
            return cls(broker, account, int(connection))
        except ValueError:
            raise ValueError(f"a shard is broker:account:connection (kite:a:0), not {key!r}") from None


@dataclass(frozen=True, slots=True)
class Pin:
    """Where an instrument must go: an account, or one of its connections."""

    account: str
    connection: int | None = None

    @classmethod
    def parse(cls, text: str) -> Pin:
        account, _, connection = text.strip().lower().partition(":")
        if not account or (connection and not connection.isdigit()):
            raise ValueError(f"a pin is ACCOUNT or ACCOUNT:CONNECTION, not {text!r}")
        return cls(account, int(connection) if connection else None)


@dataclass(frozen=True)
class Plan:
    broker: str
    shards: tuple[Shard, ...]
    #: instrument id -> its shard
    assignment: Mapping[int, Shard]
    #: instruments beyond every shard's cap
    unassigned: tuple[int, ...] = ()
    #: pinned instruments that could not go where they are pinned (account gone or full)
    unhonoured_pins: tuple[int, ...] = ()
    _by_shard: dict[Shard, list[int]] = field(default_factory=dict, compare=False, repr=False)

    def instruments_of(self, shard: Shard) -> list[int]:
        if not self._by_shard and self.assignment:
            for i, s in sorted(self.assignment.items()):
                self._by_shard.setdefault(s, []).append(i)
        return list(self._by_shard.get(shard, ()))

    def moved_from(self, previous: Mapping[int, Shard]) -> int:
        """Instruments of both plans whose shard changed."""
        return sum(1 for i, s in self.assignment.items() if i in previous and previous[i] != s)

    def to_json(self) -> str:
        return json.dumps(
            {
                "broker": self.broker,
                "shards": {s.key: self.instruments_of(s) for s in self.shards},
                "unassigned": list(self.unassigned),
                "unhonoured_pins": list(self.unhonoured_pins),
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        raw = json.loads(text)
        shards = tuple(Shard.parse(k) for k in raw["shards"])
        assignment = {int(i): Shard.parse(k) for k, ids in raw["shards"].items() for i in ids}
        return cls(
            raw["broker"],
            shards,
            assignment,
            tuple(raw.get("unassigned", ())),
            tuple(raw.get("unhonoured_pins", ())),
        )

    def summary(self) -> dict[str, Any]:
        """What ``/api/status`` and ``trading-helper status`` show of it."""
        return {
            "broker": self.broker,
            "accounts": sorted({s.account for s in self.shards}),
            "shards": {s.key: len(self.instruments_of(s)) for s in self.shards},
            "instruments": len(self.assignment),
            "unassigned": len(self.unassigned),
            "unhonoured_pins": len(self.unhonoured_pins),
        }


def plan_shards(
    broker: str,
    instruments: Iterable[int],
    accounts: Sequence[str],
    *,
    previous: Mapping[int, Shard] | None = None,
    pins: Mapping[int, Pin] | None = None,
    caps: Caps | None = None,
) -> Plan:
    """The plan for ``instruments`` over ``accounts`` (see the module's rules)."""
    cap = caps or CAPS[broker]
    previous = previous or {}
    pins = pins or {}
    shards = tuple(Shard(broker, a, c) for a in dict.fromkeys(accounts) for c in range(cap.connections))
    order = {s: n for n, s in enumerate(shards)}
    load = dict.fromkeys(shards, 0)
    assignment: dict[int, Shard] = {}

    def put(i: int, shard: Shard) -> None:
        assignment[i] = shard
        load[shard] += 1

    def least_loaded(candidates: Iterable[Shard]) -> Shard | None:
        room = [s for s in candidates if load[s] < cap.per_connection]
        return min(room, key=lambda s: (load[s], order[s])) if room else None

    ids = sorted(set(instruments))
    unhonoured: list[int] = []
    for i in ids:  # pins first: they claim their room before anyone stays
        pin = pins.get(i)
        if pin is None:
            continue
        targets = [s for s in shards if s.account == pin.account and pin.connection in (None, s.connection)]
        before = previous.get(i)
        if before in targets and load[before] < cap.per_connection:
            put(i, before)
        elif (target := least_loaded(targets)) is not None:
            put(i, target)
        else:
            unhonoured.append(i)
    for i in ids:  # then everyone whose shard is still there keeps it
        before = previous.get(i)
        if i not in assignment and before in load and load[before] < cap.per_connection:
            put(i, before)
    unassigned: list[int] = []
    for i in ids:  # then the rest, dealt out
        if i in assignment:
            continue
        target = least_loaded(shards)
        if target is None:
            unassigned.append(i)
        else:
            put(i, target)
    return Plan(broker, shards, assignment, tuple(unassigned), tuple(unhonoured))


def parse_pins(text: str) -> dict[str, Pin]:
    """``SHARD_PINS``: ``TOKEN=ACCOUNT[:CONNECTION],...`` (broker tokens) -> token -> pin."""
    out: dict[str, Pin] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        token, eq, where = item.partition("=")
        if not eq or not token.strip():
            raise ValueError(f"SHARD_PINS: {item.strip()!r} is not TOKEN=ACCOUNT[:CONNECTION]")
        out[token.strip()] = Pin.parse(where)
    return out
