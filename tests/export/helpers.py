"""Running ``trading-helper`` as a user does: a child process with only the given settings."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path


async def run_cli(
    home: Path, env: dict[str, str], *args: str, timeout_s: float = 120
) -> tuple[int, str, str]:
    """``python -m trading_helper.cli ARGS`` in ``home`` (also its HOME); (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trading_helper.cli",
        *args,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home), **env},
        cwd=home,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
