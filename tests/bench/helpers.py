"""Running a benchmark as a user would: ``trading-helper bench ... --json`` in a child process,
its one JSON object read from stdout (progress goes to stderr)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def run_bench_json(args: Sequence[str], env: Mapping[str, str], timeout_s: float) -> dict[str, Any]:
    """``trading-helper bench <args> --json``: it must succeed and print exactly one JSON line."""
    done = subprocess.run(
        [sys.executable, "-m", "trading_helper.cli", "bench", *args, "--json"],
        env=dict(env), capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must hold only the JSON object: {done.stdout[:2000]}"
    result: dict[str, Any] = json.loads(lines[0])
    return result
