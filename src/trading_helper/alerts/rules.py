"""Alert rules: what a rule says, checked once (``parse_rule``) so the engine never meets one it
cannot evaluate.

A rule compares a *left* series of one instrument with a constant ``value`` or with a *right*
series (of the same instrument or another one)::

    on "tick":  left/right in ltp | change_pct | volume | oi      (every tick of the left instrument)
    on "1m" .. "1d":  left/right in close | open | high | low | volume | <study>[.<output>]
                      (each closed candle, after the lateness grace; ``ema:20``, ``macd.signal``)

Operators ``>``, ``>=``, ``<``, ``<=`` hold on an observation; ``crosses_above`` /
``crosses_below`` fire on the observation where ``left - right`` turns positive (negative) after
being at most (at least) zero on the previous one. ``repeat``: ``once`` (the rule is done after
its first trigger) or ``every`` (again after ``cooldown_s`` seconds of exchange time).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from trading_helper.errors import InvalidAlert, InvalidStudy
from trading_helper.indicators.studies import Study, parse_study
from trading_helper.timeframes import Timeframe

Op = Literal[">", ">=", "<", "<=", "crosses_above", "crosses_below"]
OPS: Final[tuple[str, ...]] = (">", ">=", "<", "<=", "crosses_above", "crosses_below")
TICK_FIELDS: Final[tuple[str, ...]] = ("ltp", "change_pct", "volume", "oi")
CANDLE_FIELDS: Final[tuple[str, ...]] = ("close", "open", "high", "low", "volume")
CHANNEL_TYPES: Final[tuple[str, ...]] = ("webhook", "telegram")
MAX_COOLDOWN_S: Final = 7 * 86_400


@dataclass(frozen=True, slots=True)
class Series:
    """One side of a comparison: a tick field, a candle field, or a study's output."""

    name: str  # the canonical text: ``ltp``, ``close``, ``ema:20``, ``macd:12:26:9.signal``
    study: Study | None = None
    output: str | None = None


@dataclass(frozen=True, slots=True)
class Channel:
    type: Literal["webhook", "telegram"]
    target: str  # the webhook URL or the Telegram chat id

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "target": self.target}


@dataclass(frozen=True, slots=True)
class Rule:
    id: int
    instrument_id: int
    on: Timeframe | None  # None: on ticks
    left: Series
    op: Op
    value: float | None = None
    right: Series | None = None
    right_instrument_id: int | None = None
    repeat: Literal["once", "every"] = "once"
    cooldown_s: float = 60.0
    channels: tuple[Channel, ...] = ()
    name: str = ""

    @property
    def instruments(self) -> set[int]:
        return {self.instrument_id} | ({self.right_instrument_id} if self.right_instrument_id else set())

    @property
    def right_iid(self) -> int:
        return self.right_instrument_id or self.instrument_id

    def describe(self) -> str:
        right = f"{self.value:g}" if self.right is None else self.right.name
        if self.right_instrument_id and self.right_instrument_id != self.instrument_id:
            right = f"{right} of id:{self.right_instrument_id}"
        return f"{self.left.name} {self.op} {right} on {self.on.value if self.on else 'tick'}"


def _bad(message: str, reason: str) -> InvalidAlert:
    return InvalidAlert(message, reason=reason)


def parse_series(text: str, on: Timeframe | None) -> Series:
    """``ltp`` / ``close`` / ``ema:20`` / ``macd.signal`` -> a :class:`Series`, or InvalidAlert."""
    name = text.strip().lower()
    if on is None:
        if name not in TICK_FIELDS:
            raise _bad(f"{text!r} is not a tick field: use one of {', '.join(TICK_FIELDS)}", "unknown_field")
        return Series(name)
    if name in CANDLE_FIELDS:
        return Series(name)
    spec, _, output = name.partition(".")
    try:
        study = parse_study(spec)
    except InvalidStudy as exc:
        raise _bad(
            f"{text!r} is neither a candle field ({', '.join(CANDLE_FIELDS)}) nor a study: {exc.message}",
            "unknown_field",
        ) from exc
    outputs = study.kind.outputs
    if output and output not in outputs:
        raise _bad(
            f"{study.spec} has no output {output!r}: use one of {', '.join(outputs)}", "unknown_output"
        )
    chosen = output or outputs[0]
    return Series(study.spec if len(outputs) == 1 else f"{study.spec}.{chosen}", study, chosen)


def parse_channels(given: Any, *, ready: frozenset[str]) -> tuple[Channel, ...]:
    """``ready``: the channel types the server is configured for (a secret, a bot token)."""
    if given is None:
        return ()
    if not isinstance(given, list) or len(given) > 5:
        raise _bad("channels must be a list of at most 5 channels", "bad_channel")
    out: list[Channel] = []
    for entry in given:
        kind = entry.get("type") if isinstance(entry, dict) else None
        target = str(entry.get("target", "")).strip() if isinstance(entry, dict) else ""
        if kind not in CHANNEL_TYPES or not target:
            raise _bad(
                'each channel is {"type": "webhook"|"telegram", "target": URL or chat id}', "bad_channel"
            )
        if kind == "webhook" and not target.startswith(("http://", "https://")):
            raise _bad(f"webhook target must be an http(s) URL, not {target[:40]!r}", "bad_channel")
        if kind not in ready:
            needs = "TELEGRAM_BOT_TOKEN" if kind == "telegram" else "ALERT_WEBHOOK_SECRET"
            raise _bad(f"a {kind} channel needs {needs} set on the server", f"{kind}_not_configured")
        out.append(Channel(kind, target))
    return tuple(out)


def parse_rule(
    body: dict[str, Any],
    *,
    rule_id: int,
    instrument_id: int,
    right_instrument_id: int | None = None,
    ready: frozenset[str] = frozenset(CHANNEL_TYPES),
) -> Rule:
    """A rule from its API/stored form (instrument references already resolved to our ids)."""
    on_text = str(body.get("on", "tick"))
    on: Timeframe | None = None
    if on_text != "tick":
        if on_text not in Timeframe._value2member_map_:
            raise _bad(
                f"on must be 'tick' or a timeframe (1m 5m 15m 1h 1d), not {on_text!r}", "unknown_timeframe"
            )
        on = Timeframe(on_text)
    left = parse_series(str(body.get("left", "")), on)
    op = body.get("op")
    if op not in OPS:
        raise _bad(f"op must be one of {', '.join(OPS)}, not {op!r}", "unknown_operator")
    value, right_text = body.get("value"), body.get("right")
    if right_instrument_id is not None and right_text is None:
        right_text = left.name
    if (value is None) == (right_text is None):
        raise _bad("give exactly one of value (a number) or right (a series to compare with)", "needs_value")
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    ):
        raise _bad(f"value must be a finite number, not {value!r}", "bad_value")
    right = parse_series(str(right_text), on) if right_text is not None else None
    if right is not None and right == left and right_instrument_id in (None, instrument_id):
        raise _bad("a series compared with itself never changes its answer", "same_series")
    repeat = body.get("repeat", "once")
    if repeat not in ("once", "every"):
        raise _bad(f"repeat must be 'once' or 'every', not {repeat!r}", "bad_repeat")
    cooldown = body.get("cooldown_s", 60)
    if (
        isinstance(cooldown, bool)
        or not isinstance(cooldown, int | float)
        or not 0 <= cooldown <= MAX_COOLDOWN_S
    ):
        raise _bad(f"cooldown_s must be a number of seconds from 0 to {MAX_COOLDOWN_S}", "bad_cooldown")
    return Rule(
        id=rule_id,
        instrument_id=instrument_id,
        on=on,
        left=left,
        op=op,
        value=None if value is None else float(value),
        right=right,
        right_instrument_id=right_instrument_id if right_instrument_id != instrument_id else None,
        repeat=repeat,
        cooldown_s=float(cooldown),
        channels=parse_channels(body.get("channels"), ready=ready),
        name=str(body.get("name", ""))[:200],
    )


def holds(op: str, diff: float, previous: float | None) -> bool:
    """Whether ``op`` fires on an observation whose ``left - right`` is ``diff`` (``previous``:
    the one before, for crossings; None when there was none)."""
    if op == ">":
        return diff > 0
    if op == ">=":
        return diff >= 0
    if op == "<":
        return diff < 0
    if op == "<=":
        return diff <= 0
    if previous is None:
        return False
    if op == "crosses_above":
        return previous <= 0 < diff
    return previous >= 0 > diff


class StoredRule(Protocol):
    """An ``alert_rules`` row (an asyncpg Record)."""

    def __getitem__(self, key: str, /) -> Any: ...


def rule_of(row: StoredRule, ready: frozenset[str] = frozenset(CHANNEL_TYPES)) -> Rule:
    """The rule of a stored ``alert_rules`` row (its spec is JSON text)."""
    return parse_rule(
        json.loads(row["spec"]),
        rule_id=row["id"],
        instrument_id=row["instrument_id"],
        right_instrument_id=row["right_instrument_id"],
        ready=ready,
    )
