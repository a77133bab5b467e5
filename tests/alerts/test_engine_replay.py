"""The engine fires exactly what an independent replay of the same ticks says: a simulated
session of five instruments with hundreds of random rules (tick and candle rules, every operator,
once and every-with-cool-down, studies, one instrument against another); ticks reach the engine
up to 2.5 s after their exchange time, so every candle's last ticks come after its end and only
the lateness grace puts them in. The oracle builds candles with pandas and studies with the
batch computation (``Study.compute``), never the engine's code."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import pandas as pd
import pytest

from trading_helper.alerts.engine import Engine
from trading_helper.alerts.rules import OPS, Rule, parse_rule
from trading_helper.errors import InvalidAlert
from trading_helper.indicators.studies import Bars
from trading_helper.models import Candle, Tick
from trading_helper.timeframes import IST, Timeframe

START = datetime(2026, 3, 2, 9, 15, tzinfo=IST)
INSTRUMENTS = (1, 2, 3, 4, 5)
PREV_CLOSE = {1: 100.0, 2: 250.0, 3: 99.0, 4: 1000.0, 5: 50.0}
SERIES = ("close", "volume", "ema:5", "rsi:7", "sma:10", "macd:3:6:2.signal", "high")


def simulate(seconds: int, rng: random.Random) -> list[Tick]:
    """Ticks in arrival order: per instrument in exchange order, each 0-2.5 s late."""
    ticks: list[Tick] = []
    for iid in INSTRUMENTS:
        price, volume, received = PREV_CLOSE[iid], 0, START
        t = START
        while t < START + timedelta(seconds=seconds):
            t += timedelta(milliseconds=rng.randint(300, 2500))
            price = round(max(1.0, price * (1 + rng.gauss(0, 0.0015))), 2)
            qty = rng.randint(1, 50)
            volume += qty
            received = max(received, t + timedelta(milliseconds=rng.randint(0, 2500)))
            ticks.append(Tick(iid, t, received, price, qty, volume, None, 5000 + volume // 7, trade_ts=t))
    ticks.sort(key=lambda k: k.received_ts)
    return ticks


def random_rules(n: int, rng: random.Random) -> list[Rule]:
    rules: list[Rule] = []
    while len(rules) < n:
        iid = rng.choice(INSTRUMENTS)
        on = rng.choice(["tick", "tick", "1m", "5m"])
        body: dict[str, object] = {
            "on": on,
            "op": rng.choice(OPS),
            "repeat": rng.choice(["once", "every"]),
            "cooldown_s": rng.choice([0, 30, 120]),
        }
        right_iid = None
        if on == "tick":
            body["left"] = left = rng.choice(["ltp", "ltp", "change_pct", "volume", "oi"])
            base = {"ltp": PREV_CLOSE[iid], "change_pct": 0.0, "volume": 3000.0, "oi": 5400.0}[left]
        else:
            body["left"] = left = rng.choice(SERIES)
            base = {"volume": 60.0, "rsi:7": 50.0, "macd:3:6:2.signal": 0.0}.get(left, PREV_CLOSE[iid])
        kind = rng.random()
        if kind < 0.6:
            body["value"] = round(base * (1 + rng.uniform(-0.01, 0.01)) + rng.uniform(-1, 1), 2)
        elif kind < 0.85 and on != "tick":
            body["right"] = rng.choice([s for s in SERIES if s != left and s not in ("volume", "rsi:7")])
            if left in ("volume", "rsi:7", "macd:3:6:2.signal"):
                body["right"] = None
                body["value"] = base
        else:
            right_iid = rng.choice([i for i in INSTRUMENTS if i != iid])
        try:
            rules.append(
                parse_rule(body, rule_id=len(rules) + 1, instrument_id=iid, right_instrument_id=right_iid)
            )
        except InvalidAlert:
            continue
    return rules


# -- the independent replay -----------------------------------------------------------------------
def candle_table(ticks: list[Tick], tf: Timeframe) -> dict[int, pd.DataFrame]:
    frame = pd.DataFrame(
        {
            "iid": [t.instrument_id for t in ticks],
            "time": [t.exchange_ts for t in ticks],
            "price": [t.last_price for t in ticks],
            "volume": [t.volume for t in ticks],
        }
    ).sort_values(["iid", "time"])
    frame["delta"] = frame.groupby("iid")["volume"].diff().fillna(frame["volume"])
    origin = pd.Timestamp("2000-01-03 00:15:00+05:30")
    frame["bucket"] = origin + ((frame["time"] - origin) // pd.Timedelta(tf.width)) * pd.Timedelta(tf.width)
    out: dict[int, pd.DataFrame] = {}
    for iid, group in frame.groupby("iid"):
        agg = group.groupby("bucket").agg(
            open=("price", "first"),
            high=("price", "max"),
            low=("price", "min"),
            close=("price", "last"),
            volume=("delta", "sum"),
        )
        candles = [
            Candle(b.to_pydatetime(), r.open, r.high, r.low, r.close, int(r.volume), timeframe=tf)
            for b, r in agg.iterrows()
        ]
        bars = Bars.of(candles, tf)
        table = agg.copy()
        for name in SERIES:
            if ":" in name:
                rule = parse_rule(
                    {"on": tf.value, "left": name, "op": ">", "value": 0}, rule_id=0, instrument_id=1
                )
                assert rule.left.study is not None and rule.left.output is not None
                table[name] = rule.left.study.compute(bars)[rule.left.output]
        out[int(iid)] = table
    return out


def fires(op: str, diff: float, previous: float | None) -> bool:
    return {
        ">": diff > 0,
        ">=": diff >= 0,
        "<": diff < 0,
        "<=": diff <= 0,
        "crosses_above": previous is not None and previous <= 0 and diff > 0,
        "crosses_below": previous is not None and previous >= 0 and diff < 0,
    }[op]


def replay(
    rules: list[Rule], observations: dict[int, list[tuple[datetime, float, float]]]
) -> set[tuple[int, datetime]]:
    expected: set[tuple[int, datetime]] = set()
    for rule in rules:
        previous: float | None = None
        last: datetime | None = None
        for at, left, right in observations.get(rule.id, []):
            if not (math.isfinite(left) and math.isfinite(right)):
                continue
            diff = left - right
            ok = fires(rule.op, diff, previous)
            previous = diff
            if ok and (last is None or (at - last).total_seconds() >= rule.cooldown_s):
                expected.add((rule.id, at))
                last = at
                if rule.repeat == "once":
                    break
    return expected


def tick_field(tick: Tick, name: str) -> float:
    return {
        "ltp": tick.last_price,
        "volume": float(tick.volume or 0),
        "oi": float(tick.open_interest or 0),
        "change_pct": (tick.last_price - PREV_CLOSE[tick.instrument_id])
        / PREV_CLOSE[tick.instrument_id]
        * 100,
    }[name]


def observations_of(rules: list[Rule], ticks: list[Tick]) -> dict[int, list[tuple[datetime, float, float]]]:
    obs: dict[int, list[tuple[datetime, float, float]]] = {r.id: [] for r in rules}
    last: dict[int, Tick] = {}
    for tick in ticks:
        last[tick.instrument_id] = tick
        for rule in rules:
            if rule.on is None and rule.instrument_id == tick.instrument_id:
                if rule.right is None:
                    right = rule.value
                elif rule.right_iid in last:
                    right = tick_field(last[rule.right_iid], rule.right.name)
                else:
                    continue
                assert right is not None
                obs[rule.id].append((tick.exchange_ts, tick_field(tick, rule.left.name), right))
    for tf in (Timeframe.M1, Timeframe.M5):
        tables = candle_table(ticks, tf)
        for rule in rules:
            if rule.on != tf:
                continue
            mine, other = tables[rule.instrument_id], tables[rule.right_iid]
            for bucket, row in mine.iterrows():
                if rule.right is None:
                    right = rule.value
                elif bucket in other.index:
                    right = float(other.loc[bucket, rule.right.name])
                else:
                    continue
                assert right is not None
                obs[rule.id].append((bucket.to_pydatetime(), float(row[rule.left.name]), right))
    return obs


@pytest.mark.parametrize("seed", [1, 2])
def test_engine_fires_exactly_what_an_independent_replay_says(seed: int) -> None:
    rng = random.Random(seed)
    ticks = simulate(2 * 3600, rng)
    rules = random_rules(400, rng)
    engine = Engine(prev_close=PREV_CLOSE)
    for rule in rules:
        engine.add(rule)
    got: list[tuple[int, datetime]] = []
    for tick in ticks:
        got.extend((t.rule.id, t.observed_at) for t in engine.on_ticks([tick], tick.received_ts))
    got.extend((t.rule.id, t.observed_at) for t in engine.advance(START + timedelta(days=1)))
    assert len(got) == len(set(got)), "a trigger fired twice"
    expected = replay(rules, observations_of(rules, ticks))
    assert len(expected) > 200, "the simulated day must exercise the rules"
    assert {rules[i - 1].on for i, _ in expected} >= {None, Timeframe.M1, Timeframe.M5}
    missed, extra = expected - set(got), set(got) - expected
    assert not missed and not extra, (sorted(missed)[:5], sorted(extra)[:5])
    assert engine.late_dropped == 0  # every late tick arrived within the grace


def test_without_the_grace_late_ticks_are_dropped_and_candles_differ() -> None:
    rng = random.Random(7)
    ticks = simulate(600, rng)
    rule = parse_rule(
        {"on": "1m", "left": "volume", "op": ">", "value": 0, "repeat": "every", "cooldown_s": 0},
        rule_id=1,
        instrument_id=1,
    )
    engine = Engine(grace=timedelta(0), prev_close=PREV_CLOSE)
    engine.add(rule)
    for tick in ticks:
        engine.on_ticks([tick], tick.received_ts)
    assert engine.late_dropped > 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"on": "tick", "left": "close", "op": ">", "value": 1}, "unknown_field"),
        ({"on": "2m", "left": "close", "op": ">", "value": 1}, "unknown_timeframe"),
        ({"on": "1m", "left": "ema:0", "op": ">", "value": 1}, "unknown_field"),
        ({"on": "1m", "left": "macd.nope", "op": ">", "value": 1}, "unknown_output"),
        ({"on": "1m", "left": "close", "op": "=", "value": 1}, "unknown_operator"),
        ({"on": "1m", "left": "close", "op": ">"}, "needs_value"),
        ({"on": "1m", "left": "close", "op": ">", "value": 1, "right": "ema:5"}, "needs_value"),
        ({"on": "1m", "left": "close", "op": ">", "value": float("nan")}, "bad_value"),
        ({"on": "1m", "left": "close", "op": ">", "right": "close"}, "same_series"),
        ({"on": "1m", "left": "close", "op": ">", "value": 1, "cooldown_s": -1}, "bad_cooldown"),
        ({"on": "1m", "left": "close", "op": ">", "value": 1, "channels": [{"type": "sms"}]}, "bad_channel"),
        (
            {
                "on": "1m",
                "left": "close",
                "op": ">",
                "value": 1,
                "channels": [{"type": "telegram", "target": "5"}],
            },
            "telegram_not_configured",
        ),
    ],
)
def test_a_rule_that_cannot_be_evaluated_names_its_reason(body: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidAlert) as caught:
        parse_rule(body, rule_id=1, instrument_id=1, ready=frozenset({"webhook"}))
    assert caught.value.reason == reason


def test_ticks_of_instruments_no_rule_follows_change_nothing() -> None:
    """The service hands the engine only the ticks of ``followed`` instruments (both sides of
    every rule, and those whose candles are folded): it fires exactly what the whole feed fires."""
    rng = random.Random(3)
    ticks = simulate(3600, rng)
    rules = [r for r in random_rules(200, rng) if 5 not in r.instruments]  # 5 ticks, unwatched
    everything, filtered = Engine(prev_close=PREV_CLOSE), Engine(prev_close=PREV_CLOSE)
    for rule in rules:
        everything.add(rule)
        filtered.add(rule)
    assert filtered.followed == {1, 2, 3, 4}
    got_all: list[tuple[int, datetime]] = []
    got_filtered: list[tuple[int, datetime]] = []
    for tick in ticks:
        at = tick.received_ts
        got_all.extend((t.rule.id, t.observed_at) for t in everything.on_ticks([tick], at))
        kept = [tick] if tick.instrument_id in filtered.followed else []
        got_filtered.extend((t.rule.id, t.observed_at) for t in filtered.on_ticks(kept, at))
    assert len(got_all) > 100 and got_filtered == got_all
    filtered.remove(rules[0].id)  # the set follows the rules
    assert filtered.followed == {i for r in rules[1:] for i in r.instruments} | set(filtered._tfs)
