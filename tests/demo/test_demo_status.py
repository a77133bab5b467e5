"""`trading-helper status` beside a demo that keeps its stream in the in-process Redis stand-in:
run in the demo's folder it shows the demo's own status; once the demo is gone it reads Redis
again and, when that fails, says in one line where to run it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests.demo.process import demo_process
from tests.services import _free_port


async def _status(cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    full = {k: v for k, v in os.environ.items() if k != "API_TOKEN"}
    full.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trading_helper.cli",
        "status",
        "--json",
        cwd=cwd,
        env=full,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


async def test_status_sees_a_demo_with_the_in_process_redis(
    admin_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    nowhere = {
        "REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0"
    }  # status must not need a Redis for this demo
    async with demo_process(admin_dsn, redis_url, tmp_path, "--in-process-redis") as (port, _token):
        assert (tmp_path / "var" / "demo.json").is_file()
        for _ in range(100):
            code, out = await _status(tmp_path, nowhere)
            assert code == 0, out
            shown = json.loads(out)
            if (shown.get("ingest") or {}).get("written", 0) > 0:
                break
            await asyncio.sleep(0.2)
        assert shown["source"].startswith(f"demo API http://127.0.0.1:{port}")
        assert shown["broker"]["name"] == "sim" and shown["ingest"]["feed_state"] == "connected"
        assert shown["subscriptions"] == 20 and shown["ingest"]["written"] > 0
        # the stand-in runs no scripts, so no leases: the one process runs alerts and snapshots
        assert "alerts:th:live" in shown["singletons"]["held"] and shown["singletons"]["standby"] == []
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        code, out = await _status(elsewhere, nowhere)  # another folder: Redis, which is not there
        assert code == 1 and len(out.strip().splitlines()) == 1, out
        assert "REDIS_URL" in out and "folder the demo runs in" in out and "Traceback" not in out
    assert not (tmp_path / "var" / "demo.json").exists()  # the demo removed it on its way out
    code, out = await _status(tmp_path, nowhere)
    assert code == 1 and "REDIS_URL" in out, out
