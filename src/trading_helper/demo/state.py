"""Where a running ``trading-helper demo`` can be found: ``var/demo.json`` in the folder it runs in.

A demo without Redis keeps its stream and its published status in an in-process stand-in that no
other process can read, so ``trading-helper status`` run in the same folder asks the demo's own
API (``/api/status``) instead, with the token the demo keeps in ``var/api_token``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from trading_helper.errors import BufferUnavailable

STATE_FILE = "demo.json"
IN_PROCESS = "redis://in-process"


@dataclass(frozen=True, slots=True)
class RunningDemo:
    url: str
    pid: int
    redis: str
    var: Path

    @property
    def in_process(self) -> bool:
        return self.redis == IN_PROCESS


def write_state(var: Path, *, url: str, redis: str) -> Path:
    path = var / STATE_FILE
    path.write_text(json.dumps({"url": url, "pid": os.getpid(), "redis": redis}) + "\n")
    return path


def clear_state(var: Path) -> None:
    path = var / STATE_FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def running_demo(var: Path) -> RunningDemo | None:
    """The demo whose state file is in ``var``, when its process still runs."""
    try:
        data: dict[str, Any] = json.loads((var / STATE_FILE).read_text())
        demo = RunningDemo(url=str(data["url"]), pid=int(data["pid"]), redis=str(data["redis"]), var=var)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return demo if _alive(demo.pid) else None


async def read_demo_status(demo: RunningDemo) -> dict[str, Any]:
    """``/api/status`` of the running demo, as ``status`` shows it."""
    token = os.environ.get("API_TOKEN", "").strip()
    if not token:
        try:
            token = (demo.var / "api_token").read_text().strip()
        except OSError as exc:
            raise BufferUnavailable(
                f"the demo at {demo.url} keeps its status in its in-process Redis stand-in; "
                f"set API_TOKEN to the token it printed to ask its API"
            ) from exc
    try:
        async with httpx.AsyncClient(base_url=demo.url, timeout=5) as client:
            answer = await client.get("/api/status", headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise BufferUnavailable(
            f"the demo at {demo.url} (pid {demo.pid}) does not answer: {type(exc).__name__}"
        ) from exc
    if answer.status_code != 200:
        raise BufferUnavailable(
            f"the demo at {demo.url} answered {answer.status_code} to /api/status (a different API_TOKEN?)"
        )
    return {"source": f"demo API {demo.url} (its Redis is an in-process stand-in)", **answer.json()}
