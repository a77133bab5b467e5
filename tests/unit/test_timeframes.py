from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import get_args

import pytest

import trading_helper
from trading_helper.api.routes import candles as candle_routes
from trading_helper.api.schemas import Interval
from trading_helper.brokers.fyers import constants as fyers_constants
from trading_helper.brokers.kite import constants as kite_constants
from trading_helper.errors import InvalidTimeframe
from trading_helper.timeframes import (
    BUCKET_ORIGIN,
    IST,
    ORIGIN_SQL,
    Timeframe,
    chart_facts,
    chart_module,
    max_span_doc,
    parse_timeframe,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1m", Timeframe.M1), ("5minute", Timeframe.M5), ("60", Timeframe.H1), ("DAY", Timeframe.D1)],
)
def test_parse_timeframe_accepts_aliases(raw: str, expected: Timeframe) -> None:
    assert parse_timeframe(raw) is expected


@pytest.mark.parametrize("raw", ["2m", "1m; DROP TABLE tick_data", "", "candles_1m"])
def test_parse_timeframe_refuses_everything_else(raw: str) -> None:
    with pytest.raises(InvalidTimeframe, match="use one of 1m, 5m, 15m, 1h, 1d"):
        parse_timeframe(raw)


def test_buckets_follow_indian_market_marks() -> None:
    ts = datetime(2026, 11, 24, 10, 7, 31, tzinfo=IST)
    assert Timeframe.M15.bucket_start(ts) == datetime(2026, 11, 24, 10, 0, tzinfo=IST)
    assert Timeframe.H1.bucket_start(ts) == datetime(2026, 11, 24, 9, 15, tzinfo=IST)
    assert Timeframe.D1.bucket_start(ts) == datetime(2026, 11, 24, 0, 15, tzinfo=IST)
    # just before 00:15 IST belongs to the previous trading day's bucket
    late = datetime(2026, 11, 25, 0, 10, tzinfo=IST)
    assert Timeframe.D1.bucket_start(late) == datetime(2026, 11, 24, 0, 15, tzinfo=IST)


# -- one source for every per-timeframe fact ------------------------------------------------------
SRC = Path(trading_helper.__file__).parent
SQL = SRC / "storage" / "sql"


def test_broker_interval_codes_come_from_the_timeframes() -> None:
    assert dict(kite_constants.TIMEFRAME_TO_INTERVAL) == {
        Timeframe.M1: "minute",
        Timeframe.M5: "5minute",
        Timeframe.M15: "15minute",
        Timeframe.H1: "60minute",
        Timeframe.D1: "day",
    }
    assert dict(fyers_constants.TIMEFRAME_TO_RESOLUTION) == {
        Timeframe.M1: "1",
        Timeframe.M5: "5",
        Timeframe.M15: "15",
        Timeframe.H1: "60",
        Timeframe.D1: "D",
    }
    # every broker code is also accepted as a timeframe, and every per-request limit has its code
    for tf in Timeframe:
        assert parse_timeframe(tf.facts.kite_interval) is tf
        assert parse_timeframe(tf.facts.fyers_resolution) is tf
    assert set(kite_constants.INTERVAL_MAX_SPAN) == {tf.facts.kite_interval for tf in Timeframe}
    assert set(fyers_constants.RESOLUTION_MAX_SPAN) == {tf.facts.fyers_resolution for tf in Timeframe}


def test_spans_nest_and_the_docs_say_them() -> None:
    for tf in Timeframe:
        f = tf.facts
        assert f.width < f.default_span <= f.chart_step <= f.max_span
        assert f.merge_span <= f.max_span
    assert max_span_doc() == "1m 31 days, 5m 120 days, 15m 200 days, 1h 731 days, 1d 7305 days"
    assert f"Maximum span per interval: {max_span_doc()};" in candle_routes._DOC


def test_the_chart_reads_the_generated_facts() -> None:
    static = SRC / "api" / "static"
    # regenerate with `python -m trading_helper.timeframes` after changing FACTS
    assert (static / "timeframes.js").read_text() == chart_module()
    facts = chart_facts()
    assert facts["originMs"] == int(datetime(2000, 1, 2, 18, 45, tzinfo=UTC).timestamp() * 1000)
    assert facts["widthMs"] == {
        "1m": 60_000,
        "5m": 300_000,
        "15m": 900_000,
        "1h": 3_600_000,
        "1d": 86_400_000,
    }
    html = (static / "index.html").read_text()
    assert html.index('src="static/timeframes.js"') < html.index('src="static/app.js"')
    assert re.findall(r'data-tf="([^"]+)"', html) == [tf.value for tf in Timeframe]
    app = (static / "app.js").read_text()
    # no copies of the facts in the page: no origin, widths or steps of its own
    assert "window.TH_TIMEFRAMES" in app
    assert not re.search(r"Date\.UTC\(|864e5|60e3|3600e3", app)
    # and no candle or volume built from ticks: the page applies the server's candle messages
    assert "volume" not in app.split("function applyTick", 1)[1].split("function applyCandle", 1)[0]
    assert "dayVolume" not in app and "volumeIncrement" not in app


def sql_interval(text: str) -> timedelta:
    """``'5 minutes'``, ``'1 hour'``, ``'1 day'`` (the spellings the migrations use)."""
    count, unit = text.split()
    return timedelta(**{unit.rstrip("s") + "s": int(count)})


def test_every_origin_literal_left_in_sql_is_the_one_origin() -> None:
    assert datetime.fromisoformat(ORIGIN_SQL) == BUCKET_ORIGIN
    literal = re.compile(r"'(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d)'")
    found: dict[str, set[str]] = {}
    for path in sorted(SQL.rglob("*.sql")):
        for value in literal.findall(path.read_text()):
            found.setdefault(value, set()).add(path.relative_to(SQL).as_posix())
    assert set(found) == {ORIGIN_SQL}, found
    # from version 10 on, SQL buckets through th_bucket(): the only new literals are its definitions
    late = {p for p in found[ORIGIN_SQL] if int(Path(p).name[:4]) >= 10}
    assert late == {"common/0010_bucket_function.sql"}
    # th_bucket_origin() and th_bucket() (written out: one body for the planner to inline)
    assert (SQL / "common" / "0010_bucket_function.sql").read_text().count(ORIGIN_SQL) == 2
    # each continuous aggregate keeps time_bucket(width, ..., origin => <the origin>) literally
    aggregates = (SQL / "timescale" / "0001_market_data.sql").read_text()
    widths = re.findall(
        r"time_bucket\(INTERVAL '([^']+)', \w+,\s+origin => TIMESTAMPTZ '([^']+)'\)", aggregates
    )
    assert [(sql_interval(w), o) for w, o in widths] == [(tf.width, ORIGIN_SQL) for tf in Timeframe]
    # Python code writes no origin of its own, but the soak's oracle: it recomputes candles
    # independently of the code it checks, on purpose (tests/oracle.py likewise)
    own = re.compile(r"2000-01-03|datetime\(2000, 1, 3\b")
    py = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if own.search(p.read_text())}
    assert py == {"timeframes.py", "bench/soak/oracle.py"}


def test_the_api_names_the_same_timeframes() -> None:
    assert get_args(Interval) == tuple(tf.value for tf in Timeframe)
