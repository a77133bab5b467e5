"""The committed Grafana files are exactly what the Python definitions generate, and hang together."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from trading_helper.grafana.build import DASHBOARDS, HERE, render, stale, write
from trading_helper.grafana.panels import DATASOURCE_UID
from trading_helper.timeframes import Timeframe


def test_committed_files_equal_the_generated_ones() -> None:
    assert stale() == [], "run `trading-helper grafana build` and commit the result"


def test_write_then_compare_round_trips(tmp_path: Path) -> None:
    written = write(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(render())
    assert stale(tmp_path) == []
    (tmp_path / "dashboards/system_health.json").write_text("{}")
    assert stale(tmp_path) == ["dashboards/system_health.json"]


def test_datasource_provisioning() -> None:
    doc = yaml.safe_load((HERE / "provisioning/datasources/trading_helper.yml").read_text())
    [ds] = doc["datasources"]
    assert ds["uid"] == DATASOURCE_UID and ds["type"] == "grafana-postgresql-datasource"
    assert ds["user"] == "grafana_reader"
    assert ds["jsonData"]["timescaledb"] is True  # a real boolean, not the string "true"
    assert ds["secureJsonData"]["password"] == "${GRAFANA_DB_PASSWORD}"  # never a literal password
    plain = yaml.safe_load(render(timescaledb=False)["provisioning/datasources/trading_helper.yml"])
    assert plain["datasources"][0]["jsonData"]["timescaledb"] is False


def test_dashboard_provider_points_at_the_mounted_folder() -> None:
    doc = yaml.safe_load((HERE / "provisioning/dashboards/trading_helper.yml").read_text())
    [provider] = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/grafana/dashboards"


def test_dashboards_are_well_formed() -> None:
    uids = set()
    for name in DASHBOARDS:
        board = json.loads((HERE / f"dashboards/{name}.json").read_text())
        uids.add(board["uid"])
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
            assert panel["datasource"]["uid"] == DATASOURCE_UID
            [target] = panel["targets"]
            assert target["datasource"]["uid"] == DATASOURCE_UID and target["rawQuery"] is True
            # recent Grafana strips SQL comments before interpolating: keep queries comment-free
            assert "--" not in target["rawSql"] and "/*" not in target["rawSql"], panel["title"]
    assert len(uids) == len(DASHBOARDS)


def test_timeframe_variable_names_only_candle_relations() -> None:
    board = DASHBOARDS["market_overview"]()
    [tf] = [v for v in board["templating"]["list"] if v["name"] == "timeframe"]
    assert tf["query"].split(",") == [t.value for t in Timeframe]
    sql = [p["targets"][0]["rawSql"] for p in board["panels"]]
    relations = {m for q in sql for m in re.findall(r"FROM (\w+\$\w+)", q)}
    assert relations == {"candles_$timeframe"}
    # everywhere else the timeframe is a quoted argument of read_candles, which whitelists it
    uses = {m for q in sql for m in re.findall(r"(\S*\$timeframe\S*)", q)}
    assert uses <= {"candles_$timeframe", "'$timeframe',", "'$timeframe'", "'$timeframe')"}, uses
