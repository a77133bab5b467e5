"""Candle timeframes: the one source of every per-timeframe fact.

A :class:`Timeframe` knows its bucket width, the spans the service works in (the longest request,
the longest broker fetch, a GET's default range, the chart's load step), the brokers' own codes
for it (Kite ``interval``, Fyers ``resolution``) and how long its candles are kept. Everything
else reads them from here: the candle service and API (and the text of their docs), the broker
adapters, the chart page (through the generated ``api/static/timeframes.js``), and the tests that
check the SQL migrations hold the same widths, retention and bucket origin.

It is also the only place where a timeframe becomes a relation name: every timeframe that reaches
SQL goes through :func:`parse_timeframe`, so a relation name is chosen from this whitelist and
never formatted from caller input.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from trading_helper.errors import InvalidTimeframe

IST = timezone(timedelta(hours=5, minutes=30), "IST")

#: One bucket origin shared by every level (TimescaleDB requires it for stacked aggregates):
#: 1m/5m/15m fall on IST clock marks, 1h buckets start at 09:15 IST like the brokers' hourly
#: candles, and the 1d bucket runs 00:15 IST -> 00:15 IST (the whole IST trading day).
#: SQL reads it through ``th_bucket_origin()`` / ``th_bucket()`` (migration 0010); the literal
#: copies left are listed at ``ORIGIN_SQL``.
BUCKET_ORIGIN = datetime(2000, 1, 3, 0, 15, tzinfo=IST)
#: the origin as SQL writes it. It stays literal in the TimescaleDB continuous aggregates
#: (``time_bucket(..., origin => ...)``: TimescaleDB accepts only a constant there, and redefining
#: an aggregate would delete its candles), in the plain-PostgreSQL candle views (the planner
#: re-parses an inlined SQL function at every planning, and the read path plans them on every
#: read: measured ~0.1-0.3 ms), in the functions of migrations 1-7 (applied migrations are history,
#: never edited) and in migration 0010's ``th_bucket_origin()`` and ``th_bucket()``;
#: ``tests/unit/test_timeframes.py`` checks that each equals this one.
ORIGIN_SQL = "2000-01-03 00:15:00+05:30"

#: how long raw ticks are kept (the specification's retention table; candles: ``Timeframe.retention``)
TICK_RETENTION = "7 days"


@dataclass(frozen=True, slots=True)
class TimeframeFacts:
    width: timedelta
    #: the longest range one candle request may ask for (a bound on work and response size)
    max_span: timedelta
    #: the longest window fetched in one broker history call: gaps closer than this share a call
    #: (the nights and weekends between them cost the broker nothing, and the adapter chunks to its
    #: own per-request limits), so a month of 1m missing is one call, not one per session
    merge_span: timedelta
    #: the range a GET /api/candles without ``from`` covers, ending at ``to``
    default_span: timedelta
    #: the chart page's first load and each scroll-back step (inside ``max_span``)
    chart_step: timedelta
    #: Kite Connect's ``interval`` path segment of the historical API
    kite_interval: str
    #: Fyers' ``resolution`` of the history API
    fyers_resolution: str
    #: how long its candles (live and broker) are kept, as an SQL interval; None: forever
    retention: str | None


class Timeframe(enum.StrEnum):
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    D1 = "1d"

    @property
    def facts(self) -> TimeframeFacts:
        return FACTS[self]

    @property
    def width(self) -> timedelta:
        return FACTS[self].width

    @property
    def relation(self) -> str:
        """The candle relation (view) holding this timeframe: ``candles_5m`` etc."""
        return f"candles_{self.value}"

    def bucket_start(self, ts: datetime) -> datetime:
        """Start of the bucket holding ``ts`` (aware), in IST."""
        if ts.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware")
        steps = (ts - BUCKET_ORIGIN) // self.width
        return (BUCKET_ORIGIN + steps * self.width).astimezone(IST)


_DAY = timedelta(days=1)

FACTS: dict[Timeframe, TimeframeFacts] = {
    Timeframe.M1: TimeframeFacts(
        timedelta(minutes=1), 31 * _DAY, 30 * _DAY, 1 * _DAY, 2 * _DAY, "minute", "1", "30 days"
    ),
    Timeframe.M5: TimeframeFacts(
        timedelta(minutes=5), 120 * _DAY, 90 * _DAY, 5 * _DAY, 10 * _DAY, "5minute", "5", "90 days"
    ),
    Timeframe.M15: TimeframeFacts(
        timedelta(minutes=15), 200 * _DAY, 180 * _DAY, 15 * _DAY, 30 * _DAY, "15minute", "15", "6 months"
    ),
    Timeframe.H1: TimeframeFacts(
        timedelta(hours=1), 731 * _DAY, 365 * _DAY, 60 * _DAY, 120 * _DAY, "60minute", "60", "1 year"
    ),
    Timeframe.D1: TimeframeFacts(
        timedelta(days=1), 7305 * _DAY, 2000 * _DAY, 365 * _DAY, 1500 * _DAY, "day", "D", None
    ),
}

#: other spellings accepted by :func:`parse_timeframe`; the brokers' own codes are added below
_ALIASES: dict[str, Timeframe] = {
    "1min": Timeframe.M1,
    "5min": Timeframe.M5,
    "15min": Timeframe.M15,
    "60m": Timeframe.H1,
    "1hour": Timeframe.H1,
    "1day": Timeframe.D1,
}
for _tf, _facts in FACTS.items():
    _ALIASES[_facts.kite_interval] = _tf
    _ALIASES[_facts.fyers_resolution.lower()] = _tf


def parse_timeframe(value: str | Timeframe) -> Timeframe:
    """Whitelist a timeframe (``1m``, ``5minute``, ``60``, ``day`` ...); anything else raises."""
    if isinstance(value, Timeframe):
        return value
    key = str(value).strip().lower()
    try:
        return Timeframe(key)
    except ValueError:
        pass
    if key in _ALIASES:
        return _ALIASES[key]
    allowed = ", ".join(t.value for t in Timeframe)
    raise InvalidTimeframe(f"unknown timeframe {value!r}: use one of {allowed}")


def span_text(span: timedelta) -> str:
    return f"{span.days} days"


def max_span_doc() -> str:
    """``1m 31 days, 5m 120 days, ...``: the docs' sentence on request spans."""
    return ", ".join(f"{tf.value} {span_text(tf.facts.max_span)}" for tf in Timeframe)


def chart_facts() -> dict[str, object]:
    """What the chart page needs, in milliseconds (the content of ``static/timeframes.js``)."""
    ms = 1000
    return {
        "originMs": int(BUCKET_ORIGIN.timestamp() * ms),
        "widthMs": {tf.value: int(tf.width.total_seconds() * ms) for tf in Timeframe},
        "stepMs": {tf.value: int(tf.facts.chart_step.total_seconds() * ms) for tf in Timeframe},
    }


def chart_module() -> str:
    """The text of ``api/static/timeframes.js``, generated from :data:`FACTS` (a test checks the
    checked-in file equals it; regenerate with ``python -m trading_helper.timeframes``)."""
    return (
        "// Generated from trading_helper/timeframes.py by `python -m trading_helper.timeframes`:"
        " do not edit.\n"
        f"window.TH_TIMEFRAMES = Object.freeze({json.dumps(chart_facts())});\n"
    )


if __name__ == "__main__":  # pragma: no cover - the generator of the chart's copy
    from importlib import resources

    target = resources.files("trading_helper.api") / "static" / "timeframes.js"
    with resources.as_file(target) as path:
        path.write_text(chart_module())
        print(f"wrote {path}")
