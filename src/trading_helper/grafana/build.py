"""Writes the Grafana files (dashboards JSON, provisioning YAML) from the Python definitions.

The output is committed beside this module; a test regenerates it and compares, so the JSON
Grafana loads is always the one the Python code (and the SQL tests) describe.

Layout (docker compose mounts ``provisioning/`` and ``dashboards/``)::

    grafana/dashboards/market_overview.json
    grafana/dashboards/system_health.json
    grafana/dashboards/option_chains.json
    grafana/provisioning/datasources/trading_helper.yml
    grafana/provisioning/dashboards/trading_helper.yml
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from trading_helper.grafana import market_overview, option_chains, system_health
from trading_helper.grafana.panels import Json
from trading_helper.grafana.provisioning import dashboards_yaml, datasource_yaml

HERE = Path(__file__).resolve().parent

DASHBOARDS: dict[str, Callable[[], Json]] = {
    "market_overview": market_overview.build,
    "system_health": system_health.build,
    "option_chains": option_chains.build,
}


def render(*, timescaledb: bool = True) -> dict[str, str]:
    """Every generated file: relative path -> text."""
    files = {
        f"dashboards/{name}.json": json.dumps(build(), indent=2, sort_keys=True) + "\n"
        for name, build in DASHBOARDS.items()
    }
    files["provisioning/datasources/trading_helper.yml"] = datasource_yaml(timescaledb=timescaledb)
    files["provisioning/dashboards/trading_helper.yml"] = dashboards_yaml()
    return files


def write(out_dir: Path = HERE, *, timescaledb: bool = True) -> list[Path]:
    """Write every file under ``out_dir``; returns the paths written."""
    written = []
    for relative, text in render(timescaledb=timescaledb).items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(out_dir: Path = HERE) -> list[str]:
    """The generated files under ``out_dir`` that differ from what the code generates."""
    return [
        relative
        for relative, text in render().items()
        if not (out_dir / relative).is_file() or (out_dir / relative).read_text(encoding="utf-8") != text
    ]
