"""``trading-helper bench indicators --json`` prints each study's costs against its reference."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from trading_helper.cli import app
from trading_helper.indicators.studies import KINDS


def test_bench_indicators_prints_json_for_every_study() -> None:
    result = CliRunner().invoke(app, ["bench", "indicators", "--bars", "2000", "--repeat", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["bench"] == "indicators" and report["bars"] == 2000 and report["reference"]["ms"] > 0
    assert {spec.split(":")[0] for spec in report["studies"]} == set(KINDS)
    for spec, costs in report["studies"].items():
        assert (
            costs["batch_ms"] >= 0 and costs["close_us_per_bar"] > 0 and costs["forming_us_per_call"] > 0
        ), spec
        # a ratio of the rounded figures, within their rounding
        ratio = costs["batch_ms"] / report["reference"]["ms"]
        assert costs["batch_x_reference"] == pytest.approx(ratio, rel=0.01, abs=0.002), spec
