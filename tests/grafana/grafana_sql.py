"""Grafana's SQL interpolation, as its PostgreSQL datasource does it, for running panel queries.

Order and forms follow Grafana's source: the frontend replaces template variables (a single
value is inserted raw with ``'`` doubled), then the backend replaces ``$__interval_ms``,
``$__interval``, ``$__unixEpochFrom()``/``$__unixEpochTo()`` (sqleng ``Interpolate``), then the
macros (pkg/tsdb/grafana-postgresql-datasource/macros.go): ``$__timeFilter``, ``$__timeFrom``,
``$__timeTo``, ``$__timeGroup`` (``time_bucket`` with the datasource's ``timescaledb`` flag,
``floor(extract(epoch ...))`` without), ``$__timeGroupAlias``, ``$__time``, ``$__timeEpoch``,
``$__unixEpochFilter``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

# Grafana's frontend variable syntax: $var, [[var]], ${var}, ${var:format}
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class MacroError(ValueError):
    pass


@dataclass(frozen=True)
class QueryContext:
    time_from: datetime
    time_to: datetime
    interval: timedelta = timedelta(minutes=1)
    variables: dict[str, str] = field(default_factory=dict)
    timescaledb: bool = False


def rfc3339_nano(ts: datetime) -> str:
    """Go's ``time.RFC3339Nano`` of a UTC time: fraction without trailing zeros, ``Z``."""
    ts = ts.astimezone(UTC)
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        text += "." + f"{ts.microsecond:06d}".rstrip("0")
    return text + "Z"


def format_interval(interval: timedelta) -> str:
    """gtime.FormatInterval: the largest unit that fits, integer count."""
    ms = int(interval.total_seconds() * 1000)
    for unit, size_ms in (
        ("y", 31_536_000_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ):
        if ms >= size_ms:
            return f"{ms // size_ms}{unit}"
    return f"{ms}ms"


def parse_interval(text: str) -> float:
    """gtime.ParseInterval for the units dashboards use; seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", text.strip())
    if not match:
        raise MacroError(f"error parsing interval {text}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def go_float(value: float) -> str:
    """Go's ``%v`` of a float64 for the sizes intervals have (integers print without ``.0``)."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value)) if abs(value) < 1e6 else f"{value:g}"
    return repr(value)


def replace_variables(sql: str, variables: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        if name not in variables:
            return match.group(0)  # Grafana leaves unknown names as they are
        return variables[name].replace("'", "''")

    return _VARIABLE.sub(sub, sql)


def replace_globals(sql: str, ctx: QueryContext) -> str:
    sql = sql.replace("$__interval_ms", str(int(ctx.interval.total_seconds() * 1000)))
    sql = sql.replace("$__interval", format_interval(ctx.interval))
    sql = sql.replace("$__unixEpochFrom()", str(int(ctx.time_from.timestamp())))
    return sql.replace("$__unixEpochTo()", str(int(ctx.time_to.timestamp())))


def _macro(name: str, args: list[str], ctx: QueryContext) -> str:
    start, end = rfc3339_nano(ctx.time_from), rfc3339_nano(ctx.time_to)
    if name in ("__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter") and not args[0]:
        raise MacroError(f"missing time column argument for macro {name}")
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{start}' AND '{end}'"
    if name == "__timeFrom":
        return f"'{start}'"
    if name == "__timeTo":
        return f"'{end}'"
    if name == "__unixEpochFilter":
        return (
            f"{args[0]} >= {int(ctx.time_from.timestamp())} AND {args[0]} <= {int(ctx.time_to.timestamp())}"
        )
    if name in ("__timeGroup", "__timeGroupAlias"):
        if len(args) < 2:
            raise MacroError(f"macro {name} needs time column and interval and optional fill value")
        seconds = parse_interval(args[1].strip("'"))
        if ctx.timescaledb:
            group = f"time_bucket('{seconds:.3f}s',{args[0]})"
        else:
            group = f"floor(extract(epoch from {args[0]})/{go_float(seconds)})*{go_float(seconds)}"
        return group + (' AS "time"' if name == "__timeGroupAlias" else "")
    raise MacroError(f"unknown macro {name!r}")


def replace_macros(sql: str, ctx: QueryContext) -> str:
    original = sql

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "__timeGroup":
            # Grafana's pre-5.3 compatibility: "$__timeGroup(...)," means the aliased form
            index = original.find(match.group(0))
            after = index + len(match.group(0))
            if index >= 0 and after < len(original) and original[after] == ",":
                name = "__timeGroupAlias"
        args = [arg.strip(" ") for arg in match.group(2).split(",")]
        return _macro(name, args, ctx)

    return _MACRO.sub(sub, sql)


def interpolate(sql: str, ctx: QueryContext) -> str:
    """``sql`` as Grafana sends it to PostgreSQL."""
    return replace_macros(replace_globals(replace_variables(sql, ctx.variables), ctx), ctx)
