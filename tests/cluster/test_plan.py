"""The shard planner (cluster/plan.py): caps, round-robin, pins, stable rebalancing, as properties."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from trading_helper.cluster.plan import CAPS, Caps, Pin, Plan, Shard, parse_pins, plan_shards

SMALL = Caps(connections=3, per_connection=7)  # Kite's shape, small enough to fill
ACCOUNTS = ["a", "b", "c", "d"]

instrument_sets = st.sets(st.integers(1, 400), max_size=120)
account_lists = st.lists(st.sampled_from(ACCOUNTS), min_size=1, max_size=4, unique=True)
pin_maps = st.dictionaries(
    st.integers(1, 400),
    st.builds(Pin, st.sampled_from(ACCOUNTS), st.one_of(st.none(), st.integers(0, 2))),
    max_size=20,
)


def loads(plan: Plan) -> Counter[Shard]:
    return Counter(plan.assignment.values())


def check_caps(plan: Plan, instruments: set[int], accounts: list[str]) -> None:
    assert set(plan.assignment) | set(plan.unassigned) == instruments
    assert not set(plan.assignment) & set(plan.unassigned)
    assert all(n <= SMALL.per_connection for n in loads(plan).values())
    assert {s.account for s in plan.assignment.values()} <= set(accounts)
    capacity = len(accounts) * SMALL.per_account
    assert len(plan.unassigned) == max(0, len(instruments) - capacity)  # only beyond every cap


@settings(max_examples=300, deadline=None)
@given(instrument_sets, account_lists, pin_maps)
def test_every_instrument_once_within_the_caps(
    instruments: set[int], accounts: list[str], pins: dict[int, Pin]
) -> None:
    plan = plan_shards("kite", instruments, accounts, pins=pins, caps=SMALL)
    check_caps(plan, instruments, accounts)
    assert plan == plan_shards("kite", sorted(instruments, reverse=True), accounts, pins=pins, caps=SMALL)
    again = plan_shards("kite", instruments, accounts, previous=plan.assignment, pins=pins, caps=SMALL)
    assert again.assignment == plan.assignment and again.moved_from(plan.assignment) == 0  # a fixed point
    assert Plan.from_json(plan.to_json()) == plan


@settings(max_examples=200, deadline=None)
@given(instrument_sets, account_lists)
def test_a_fresh_plan_deals_round_robin(instruments: set[int], accounts: list[str]) -> None:
    plan = plan_shards("kite", instruments, accounts, caps=SMALL)
    counts = [loads(plan)[s] for s in plan.shards]
    assert max(counts) - min(counts) <= 1
    ids = sorted(plan.assignment)[: len(plan.shards)]
    assert [plan.assignment[i] for i in ids] == list(plan.shards)[: len(ids)]  # first n ids: shard 0..n-1


@settings(max_examples=300, deadline=None)
@given(instrument_sets, account_lists, pin_maps, st.sampled_from(ACCOUNTS))
def test_adding_an_account_moves_nothing_and_losing_one_moves_only_its_own(
    instruments: set[int], accounts: list[str], pins: dict[int, Pin], change: str
) -> None:
    before = plan_shards("kite", instruments, accounts, pins=pins, caps=SMALL)
    if change not in accounts:
        after = plan_shards(
            "kite", instruments, [*accounts, change], previous=before.assignment, pins=pins, caps=SMALL
        )
        check_caps(after, instruments, [*accounts, change])
        moved = {i for i, s in before.assignment.items() if after.assignment[i] != s}
        # only pinned instruments that can now go where they are pinned move
        assert all(i in pins and pins[i].account == change for i in moved)
        assert set(before.unassigned) - set(after.unassigned) <= set(after.assignment)
    elif len(accounts) > 1:
        left = [a for a in accounts if a != change]
        after = plan_shards("kite", instruments, left, previous=before.assignment, pins=pins, caps=SMALL)
        check_caps(after, instruments, left)
        for i, s in before.assignment.items():
            if s.account != change and i in after.assignment:
                assert after.assignment[i] == s, (i, s, after.assignment[i])  # the others stay


@settings(max_examples=300, deadline=None)
@given(instrument_sets, account_lists, pin_maps)
def test_pins_are_honoured_while_their_account_has_room(
    instruments: set[int], accounts: list[str], pins: dict[int, Pin]
) -> None:
    plan = plan_shards("kite", instruments, accounts, pins=pins, caps=SMALL)
    for i in instruments & set(pins):
        pin = pins[i]
        targets = [
            s for s in plan.shards if s.account == pin.account and pin.connection in (None, s.connection)
        ]
        if i in plan.unhonoured_pins:
            # pins claim room first: a pin fails only when its account is gone or its targets are
            # full of other instruments pinned there
            pinned_at = Counter(
                s for j, s in plan.assignment.items() if j in pins and j not in plan.unhonoured_pins
            )
            assert all(pinned_at[s] == SMALL.per_connection for s in targets)
        else:
            assert plan.assignment[i] in targets


@settings(max_examples=200, deadline=None)
@given(instrument_sets, instrument_sets, account_lists)
def test_new_subscriptions_leave_the_old_where_they_are(
    old: set[int], new: set[int], accounts: list[str]
) -> None:
    before = plan_shards("kite", old, accounts, caps=SMALL)
    after = plan_shards("kite", old | new, accounts, previous=before.assignment, caps=SMALL)
    assert after.moved_from(before.assignment) == 0
    gone = plan_shards("kite", old - new, accounts, previous=before.assignment, caps=SMALL)
    assert gone.moved_from(before.assignment) == 0


def test_kite_and_fyers_caps() -> None:
    plan = plan_shards("kite", range(12_000), ["a", "b"])
    assert len(plan.shards) == 6 and max(loads(plan).values()) == 2000 and not plan.unassigned
    full = plan_shards("kite", range(20_000), ["a", "b"])
    assert len(full.unassigned) == 20_000 - 2 * 9000 and max(loads(full).values()) == 3000
    fyers = plan_shards("fyers", range(7000), ["x", "y"])
    assert [s.key for s in fyers.shards] == ["fyers:x:0", "fyers:y:0"] and CAPS["fyers"].per_account == 5000
    assert fyers.summary()["shards"] == {"fyers:x:0": 3500, "fyers:y:0": 3500}


def test_pins_and_shard_names_parse() -> None:
    assert parse_pins("256265=a, 260105=b:2") == {"256265": Pin("a"), "260105": Pin("b", 2)}
    assert Shard.parse("kite:a:1") == Shard("kite", "a", 1) and Shard("kite", "a", 1).key == "kite:a:1"
    for bad in ("256265", "=a", "1=a:x"):
        try:
            parse_pins(bad)
        except ValueError as exc:
            assert "SHARD_PINS" in str(exc) or "pin is" in str(exc)
        else:
            raise AssertionError(bad)
