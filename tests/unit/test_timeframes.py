from __future__ import annotations

from datetime import datetime

import pytest

from trading_helper.errors import InvalidTimeframe
from trading_helper.timeframes import IST, Timeframe, parse_timeframe


@pytest.mark.parametrize(("raw", "expected"), [("1m", Timeframe.M1), ("5minute", Timeframe.M5),
                                               ("60", Timeframe.H1), ("DAY", Timeframe.D1)])
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
