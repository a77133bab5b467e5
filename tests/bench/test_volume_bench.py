"""``trading-helper bench volume``: both rule sets agree on the same updates, and every tick of the
encoded batches becomes a trade row (each update is a new trade with a growing volume)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from trading_helper.bench.volume import run_volume_bench
from trading_helper.cli import app


def test_the_book_and_the_tracker_agree_and_every_tick_is_a_trade() -> None:
    out = run_volume_bench(instruments=300, per_batch=70, rounds=3, repeats=1)
    assert out["ticks"] == 900
    assert out["agree"] is True
    assert out["trades_built"] == 900
    assert out["tracker_us_per_tick"] > 0 and out["book_us_per_tick"] > 0
    assert abs(out["book_x_tracker"] - out["book_us_per_tick"] / out["tracker_us_per_tick"]) < 0.01


def test_the_command_prints_one_json_object() -> None:
    result = CliRunner().invoke(
        app, ["bench", "volume", "--instruments", "50", "--per-batch", "20", "--rounds", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["ticks"] == 100 and out["agree"] is True
