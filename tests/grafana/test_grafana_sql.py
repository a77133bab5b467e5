"""The interpolation used to run panel queries gives what Grafana's own macro tests expect
(pkg/tsdb/grafana-postgresql-datasource/macros_test.go)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.grafana.grafana_sql import MacroError, QueryContext, format_interval, interpolate

FROM = datetime(2018, 4, 12, 18, 0, tzinfo=UTC)
CTX = QueryContext(time_from=FROM, time_to=FROM + timedelta(minutes=5))
TS = QueryContext(time_from=FROM, time_to=FROM + timedelta(minutes=5), timescaledb=True)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select $__time(time_column)", 'select time_column AS "time"'),
        (
            "WHERE $__timeFilter(time_column)",
            "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
        ),
        ("select $__timeFrom()", "select '2018-04-12T18:00:00Z'"),
        ("select $__timeTo()", "select '2018-04-12T18:05:00Z'"),
        (
            "SELECT $__timeGroup(time_column,'5m'), value",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value',
        ),
        (
            "SELECT $__timeGroup(time_column,'5m') as time, value",
            "SELECT floor(extract(epoch from time_column)/300)*300 as time, value",
        ),
        ("$__timeGroupAlias(time_column , '5m')", 'floor(extract(epoch from time_column)/300)*300 AS "time"'),
        (
            "select $__unixEpochFilter(time)",
            f"select time >= {int(FROM.timestamp())} AND time <= {int(FROM.timestamp()) + 300}",
        ),
    ],
)
def test_macros_as_grafana(sql: str, expected: str) -> None:
    assert interpolate(sql, CTX) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("GROUP BY $__timeGroup(time_column,'5m')", "GROUP BY time_bucket('300.000s',time_column)"),
        ("GROUP BY $__timeGroup(time_column , '12d')", "GROUP BY time_bucket('1036800.000s',time_column)"),
        ("GROUP BY $__timeGroup(time_column , '20ms')", "GROUP BY time_bucket('0.020s',time_column)"),
    ],
)
def test_time_group_with_timescaledb(sql: str, expected: str) -> None:
    assert interpolate(sql, TS) == expected


def test_half_seconds_keep_their_fraction() -> None:
    ctx = QueryContext(
        time_from=datetime(1960, 2, 1, 7, 0, 0, 500_000, tzinfo=UTC),
        time_to=datetime(1980, 2, 3, 8, 0, 0, 500_000, tzinfo=UTC),
    )
    assert (
        interpolate("$__timeFilter(t)", ctx)
        == "t BETWEEN '1960-02-01T07:00:00.5Z' AND '1980-02-03T08:00:00.5Z'"
    )


def test_variables_then_globals_then_macros() -> None:
    ctx = QueryContext(
        time_from=FROM,
        time_to=FROM + timedelta(hours=1),
        interval=timedelta(minutes=10),
        variables={"timeframe": "15m", "name": "O'Neil"},
    )
    sql = (
        "SELECT $__timeGroupAlias(t, $__interval), $__interval_ms FROM candles_$timeframe WHERE n = '${name}'"
    )
    assert interpolate(sql, ctx) == (
        "SELECT floor(extract(epoch from t)/600)*600 AS \"time\", 600000 FROM candles_15m WHERE n = 'O''Neil'"
    )


def test_interval_text() -> None:
    assert [
        format_interval(timedelta(milliseconds=ms))
        for ms in (20, 1000, 60_000, 600_000, 7_200_000, 86_400_000)
    ] == ["20ms", "1s", "1m", "10m", "2h", "1d"]


def test_unknown_macro_is_an_error() -> None:
    with pytest.raises(MacroError):
        interpolate("SELECT $__nope(x)", CTX)
