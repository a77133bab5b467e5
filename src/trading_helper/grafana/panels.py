"""Small builders for Grafana dashboard JSON: panels, SQL targets, template variables.

Plain dicts rather than the ``grafana-foundation-sdk``: its Python builders have no PostgreSQL
query type, so every target would be a hand-made dict anyway, and the JSON Grafana reads is
what we commit and test. Each builder fills only what differs from Grafana's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

#: uid of the provisioned PostgreSQL/TimescaleDB datasource (provisioning.py)
DATASOURCE_UID = "trading-helper-db"
DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE: dict[str, str] = {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}

PanelType = Literal["candlestick", "timeseries", "table", "stat", "barchart"]
QueryFormat = Literal["time_series", "table"]

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Panel:
    """One panel with one SQL query; ``width``/``height`` in Grafana grid units (24 wide)."""

    title: str
    type: PanelType
    sql: str
    width: int = 12
    height: int = 8
    description: str = ""
    unit: str = ""
    options: Json = field(default_factory=dict)
    custom: Json = field(default_factory=dict)

    @property
    def format(self) -> QueryFormat:
        # time series and candles need Grafana's time-series frame (a sorted "time" column)
        return "time_series" if self.type in ("candlestick", "timeseries") else "table"


def _target(panel: Panel) -> Json:
    return {
        "refId": "A",
        "datasource": DATASOURCE,
        "editorMode": "code",
        "format": panel.format,
        "rawQuery": True,
        "rawSql": panel.sql.strip(),
    }


def _defaults(panel: Panel) -> Json:
    defaults: Json = {}
    if panel.unit:
        defaults["unit"] = panel.unit
    if panel.custom:
        defaults["custom"] = panel.custom
    return defaults


def layout(panels: list[Panel]) -> list[Json]:
    """Panel JSON with ids and grid positions, filling rows left to right."""
    out: list[Json] = []
    x = y = row_height = 0
    for number, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        item: Json = {
            "id": number,
            "type": panel.type,
            "title": panel.title,
            "datasource": DATASOURCE,
            "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
            "targets": [_target(panel)],
            "fieldConfig": {"defaults": _defaults(panel), "overrides": []},
            "options": panel.options,
        }
        if panel.description:
            item["description"] = panel.description
        out.append(item)
        x += panel.width
        row_height = max(row_height, panel.height)
    return out


def query_variable(name: str, label: str, sql: str) -> Json:
    """A variable whose choices come from SQL (``__text``/``__value`` columns)."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": sql.strip(),
        "definition": sql.strip(),
        "refresh": 1,  # on dashboard load
        "sort": 0,
        "multi": False,
        "includeAll": False,
        "current": {},
        "options": [],
        "hide": 0,
    }


def custom_variable(name: str, label: str, values: list[str], default: str) -> Json:
    """A fixed list of choices (``1m,5m,...``)."""
    return {
        "name": name,
        "label": label,
        "type": "custom",
        "query": ",".join(values),
        "current": {"text": default, "value": default, "selected": True},
        "options": [{"text": v, "value": v, "selected": v == default} for v in values],
        "multi": False,
        "includeAll": False,
        "hide": 0,
    }


def dashboard(
    uid: str,
    title: str,
    panels: list[Panel],
    *,
    variables: list[Json] | None = None,
    time_from: str = "now-6h",
    refresh: str = "10s",
    tags: list[str] | None = None,
    description: str = "",
) -> Json:
    """A whole dashboard; times shown in IST, the market's clock."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": tags or ["trading-helper"],
        "timezone": "Asia/Kolkata",
        "editable": True,
        "graphTooltip": 1,  # shared crosshair
        "schemaVersion": 39,
        "version": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": variables or []},
        "annotations": {"list": []},
        "links": [],
        "panels": layout(panels),
    }
