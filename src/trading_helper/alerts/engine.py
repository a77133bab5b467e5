"""The alert engine: ticks in, triggers out. Pure (no I/O), so a replay gives the same triggers.

- Tick rules are evaluated on every tick of their (left) instrument, in arrival order; a right
  series of another instrument is that instrument's latest tick.
- Candle rules see closed candles only. A candle is built from ticks by the one volume rule
  (:class:`~trading_helper.ingest.volume.VolumeTracker`, as the stored candles are) and by trade
  time; it closes when the clock passes its end plus the lateness grace
  (:data:`~trading_helper.ingest.coverage.LATE_TICK_GRACE`), so a tick that arrives late but
  within the grace is in it. A tick for a candle already closed is counted (``late_dropped``).
  Studies are carried bar by bar by :class:`~trading_helper.indicators.incremental.StudyUpdater`.
- Cool-downs are measured in exchange time (the tick's, or the candle's bucket), never the
  wall clock, so a replay of the same ticks fires the same triggers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from trading_helper.alerts.rules import Rule, Series, holds
from trading_helper.indicators.incremental import StudyUpdater
from trading_helper.ingest.coverage import LATE_TICK_GRACE
from trading_helper.ingest.volume import NO_TRADE, VolumeTracker, from_us, to_us
from trading_helper.models import Candle, Tick
from trading_helper.timeframes import Timeframe

#: closed buckets whose values a series keeps (a right series is looked up by the left's bucket)
KEEP_BUCKETS = 8


@dataclass(slots=True)
class Trigger:
    rule: Rule
    observed_at: datetime  # the tick's exchange time, or the closed candle's bucket
    left: float
    right: float
    key: str  # idempotency key: the same trigger always has the same key
    #: when the tick that fired it was received (tick rules): the start of the alert's latency
    received_at: datetime | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "rule_id": self.rule.id,
            "name": self.rule.name,
            "instrument_id": self.rule.instrument_id,
            "condition": self.rule.describe(),
            "observed_at": self.observed_at.isoformat(),
            "left": self.left,
            "right": self.right,
            "idempotency_key": self.key,
            "tick_received_at": self.received_at.isoformat() if self.received_at else None,
        }


@dataclass(slots=True)
class _State:
    previous: float | None = None
    last_fired: datetime | None = None
    done: bool = False
    same_time: int = 0


@dataclass(slots=True)
class _Bar:
    """A candle still open (mutable: folding a tick must not build a new object)."""

    bucket: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    oi: int | None

    def candle(self, tf: Timeframe) -> Candle:
        return Candle(
            self.bucket, self.open, self.high, self.low, self.close, self.volume, self.oi, timeframe=tf
        )


@dataclass(slots=True)
class _CandleSeries:
    """The candles of one instrument and timeframe: those still open (within the grace) and the
    values of the last few closed ones."""

    tf: Timeframe
    open: dict[datetime, _Bar] = field(default_factory=dict)
    closed_until: datetime | None = None  # buckets before this are closed
    updaters: dict[str, StudyUpdater] = field(default_factory=dict)
    wanted: set[Series] = field(default_factory=set)
    values: dict[datetime, dict[str, float]] = field(default_factory=dict)
    late: bool = False

    def fold(self, at: datetime, price: float, traded: int, oi: int | None) -> datetime | None:
        """Fold one trade in; the bucket's close time when it opened a bucket, else None (and
        ``late`` set when its bucket had closed already)."""
        bucket = self.tf.bucket_start(at)
        self.late = self.closed_until is not None and bucket < self.closed_until
        if self.late:
            return None
        bar = self.open.get(bucket)
        if bar is None:
            self.open[bucket] = _Bar(bucket, price, price, price, price, traded, oi)
            return bucket + self.tf.width
        bar.high = max(bar.high, price)
        bar.low = min(bar.low, price)
        bar.close = price
        bar.volume += traded
        if oi is not None:
            bar.oi = oi
        return None

    def close_due(self, now: datetime, grace: timedelta) -> list[datetime]:
        due = sorted(b for b in self.open if b + self.tf.width + grace <= now)
        for bucket in due:
            self.close(self.open.pop(bucket).candle(self.tf))
        return due

    def close(self, candle: Candle) -> None:
        studies = {s: u.close(candle) for s, u in self.updaters.items()}
        fields = {
            "close": candle.close,
            "open": candle.open,
            "high": candle.high,
            "low": candle.low,
            "volume": float(candle.volume),
        }
        out: dict[str, float] = {}
        for series in self.wanted:
            if series.study is None:
                out[series.name] = fields[series.name]
            else:
                out[series.name] = studies[series.study.spec][series.output or ""]
        self.values[candle.bucket] = out
        self.closed_until = candle.bucket + self.tf.width
        if len(self.values) > KEEP_BUCKETS:
            del self.values[min(self.values)]


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class Engine:
    """``prev_close``: each instrument's previous session close (for ``change_pct``)."""

    def __init__(
        self, *, grace: timedelta = LATE_TICK_GRACE, prev_close: Mapping[int, float] | None = None
    ) -> None:
        self.grace = grace
        self.prev_close: dict[int, float] = dict(prev_close or {})
        self.rules: dict[int, Rule] = {}
        self.state: dict[int, _State] = {}
        self._tick_rules: dict[int, list[Rule]] = {}
        self._candle_rules: dict[tuple[int, Timeframe], list[Rule]] = {}
        self._series: dict[tuple[int, Timeframe], _CandleSeries] = {}
        self._tfs: dict[int, set[Timeframe]] = {}
        self._last_tick: dict[int, dict[str, float]] = {}
        self._followed: frozenset[int] | None = None
        self._volume = VolumeTracker()
        self.late_dropped = 0
        self.ticks_seen = 0
        #: the earliest time a candle can close (None: none open)
        self._due_at: datetime | None = None

    # -- rules --------------------------------------------------------------------------------
    def add(
        self,
        rule: Rule,
        history: Mapping[int, Sequence[Candle]] | None = None,
        *,
        last_fired: datetime | None = None,
    ) -> None:
        """Follow ``rule``; ``history``: closed candles of its timeframe per instrument, oldest
        first, for its studies' warm-up (without it a study starts from the first live bar);
        ``last_fired``: its last trigger's time (a cool-down survives a restart)."""
        self.remove(rule.id)
        self._followed = None
        self.rules[rule.id] = rule
        self.state[rule.id] = _State(last_fired=last_fired)
        if rule.on is None:
            self._tick_rules.setdefault(rule.instrument_id, []).append(rule)
            return
        self._candle_rules.setdefault((rule.instrument_id, rule.on), []).append(rule)
        sides = [(rule.instrument_id, rule.left)]
        if rule.right is not None:
            sides.append((rule.right_iid, rule.right))
        for iid, series in sides:
            cs = self._series.get((iid, rule.on))
            if cs is None:
                cs = self._series[(iid, rule.on)] = _CandleSeries(rule.on)
                self._tfs.setdefault(iid, set()).add(rule.on)
            cs.wanted.add(series)
            if series.study is not None and series.study.spec not in cs.updaters:
                cs.updaters[series.study.spec] = StudyUpdater(series.study, (history or {}).get(iid, ()))

    def remove(self, rule_id: int) -> None:
        rule = self.rules.pop(rule_id, None)
        self.state.pop(rule_id, None)
        if rule is None:
            return
        self._followed = None
        index: list[Rule] = (
            self._tick_rules.get(rule.instrument_id, [])
            if rule.on is None
            else self._candle_rules.get((rule.instrument_id, rule.on), [])
        )
        index[:] = [r for r in index if r.id != rule_id]

    @property
    def followed(self) -> frozenset[int]:
        """The instruments whose ticks matter: those of the rules (both sides) and of the candles
        folded for them; other ticks change nothing and need not be handed in."""
        if self._followed is None:
            ids = {iid for rule in self.rules.values() for iid in rule.instruments}
            self._followed = frozenset(ids | set(self._tfs))
        return self._followed

    # -- evaluation ---------------------------------------------------------------------------
    def on_ticks(self, ticks: Iterable[Tick], now: datetime) -> list[Trigger]:
        """Ticks in arrival order (``now``: the clock when they arrived); the triggers they fire,
        then those of the candles the clock closed."""
        fired: list[Trigger] = []
        for tick in ticks:
            self.ticks_seen += 1
            iid = tick.instrument_id
            values = self._tick_values(tick)
            self._last_tick[iid] = values
            for rule in self._tick_rules.get(iid, ()):
                right = (
                    rule.value
                    if rule.right is None
                    else self._last_tick.get(rule.right_iid, {}).get(rule.right.name)
                )
                self._observe(
                    rule, tick.exchange_ts, values.get(rule.left.name), right, fired, tick.received_ts
                )
            tfs = self._tfs.get(iid)
            if tfs:
                self._fold(tick, tfs)
        fired.extend(self.advance(now))
        return fired

    def _tick_values(self, tick: Tick) -> dict[str, float]:
        values = {"ltp": tick.last_price}
        if tick.volume is not None:
            values["volume"] = float(tick.volume)
        if tick.open_interest is not None:
            values["oi"] = float(tick.open_interest)
        prev = self.prev_close.get(tick.instrument_id)
        if prev:
            values["change_pct"] = (tick.last_price - prev) / prev * 100.0
        return values

    def _fold(self, tick: Tick, tfs: set[Timeframe]) -> None:
        trade_us = to_us(tick.trade_ts) if tick.trade_ts is not None else -1
        at_us, traded = self._volume.apply(
            tick.instrument_id, to_us(tick.exchange_ts), trade_us, tick.volume, tick.last_quantity
        )
        if at_us == NO_TRADE:
            return
        at = from_us(at_us)
        for tf in tfs:
            series = self._series[(tick.instrument_id, tf)]
            ends = series.fold(at, tick.last_price, traded, tick.open_interest)
            if series.late:
                self.late_dropped += 1
            elif ends is not None and (self._due_at is None or ends + self.grace < self._due_at):
                self._due_at = ends + self.grace

    def advance(self, now: datetime) -> list[Trigger]:
        """Close every candle whose end plus the grace is past ``now``; the triggers of their rules."""
        if self._due_at is None or now < self._due_at:
            return []  # nothing can close yet: no walk over every series
        closed = [(key, b) for key, cs in self._series.items() for b in cs.close_due(now, self.grace)]
        ends = [min(cs.open) + cs.tf.width for cs in self._series.values() if cs.open]
        self._due_at = min(ends) + self.grace if ends else None
        fired: list[Trigger] = []
        for (iid, tf), bucket in sorted(closed, key=lambda kb: kb[1]):
            left_values = self._series[(iid, tf)].values.get(bucket, {})
            for rule in self._candle_rules.get((iid, tf), ()):
                if rule.right is None:
                    right = rule.value
                else:
                    other = self._series[(rule.right_iid, tf)]
                    right = other.values.get(bucket, {}).get(rule.right.name)
                self._observe(rule, bucket, left_values.get(rule.left.name), right, fired)
        return fired

    def _observe(
        self,
        rule: Rule,
        at: datetime,
        left: float | None,
        right: float | None,
        fired: list[Trigger],
        received_at: datetime | None = None,
    ) -> None:
        if left is None or right is None or not (_finite(left) and _finite(right)):
            return
        st = self.state[rule.id]
        diff = left - right
        previous, st.previous = st.previous, diff
        if st.done or not holds(rule.op, diff, previous):
            return
        if st.last_fired is not None and (at - st.last_fired).total_seconds() < rule.cooldown_s:
            return
        st.same_time = st.same_time + 1 if st.last_fired == at else 0
        st.last_fired = at
        st.done = rule.repeat == "once"
        key = f"r{rule.id}-{to_us(at)}-{st.same_time}"
        fired.append(Trigger(rule, at, left, right, key, received_at))
