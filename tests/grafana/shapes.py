"""What each Grafana panel type needs from the rows its query returns."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from trading_helper.grafana.build import DASHBOARDS

NUMBER = (int, float, Decimal)
CANDLE_FIELDS = ("open", "high", "low", "close", "volume")


def panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, build in DASHBOARDS.items():
        for panel in build()["panels"]:
            yield name, panel


def check_shape(panel: dict[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """The frame Grafana builds from ``rows`` suits the panel type."""
    fmt = panel["targets"][0]["format"]
    if fmt == "time_series":
        assert rows, f"{panel['title']}: no rows"
        columns = list(rows[0].keys())
        assert "time" in columns, f"{panel['title']}: time series need a column named time, got {columns}"
        times = [r["time"] for r in rows]
        assert all(isinstance(t, (datetime, *NUMBER)) for t in times), panel["title"]
        assert times == sorted(times), f"{panel['title']}: time column not sorted"
        for column in columns:
            if column != "time":
                assert all(r[column] is None or isinstance(r[column], NUMBER) for r in rows), (
                    f"{panel['title']}: column {column} is not numeric (it would become a label)"
                )
    if panel["type"] == "candlestick":
        names = [c.lower() for c in rows[0].keys()]
        assert all(f in names for f in CANDLE_FIELDS), f"candlestick needs {CANDLE_FIELDS}, got {names}"
        for r in rows:
            assert r["low"] <= min(r["open"], r["close"]) <= max(r["open"], r["close"]) <= r["high"]
    if panel["type"] == "stat":
        assert rows and all(isinstance(v, NUMBER) for v in rows[0].values()), panel["title"]
