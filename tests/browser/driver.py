"""The Python side of tests/browser/driver.mjs: one headless Chromium per ``async with Browser()``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("driver.mjs")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
REQUEST_TIMEOUT_S = 60.0


class BrowserError(RuntimeError):
    pass


def prerequisites() -> str | None:
    """What is missing to run the browser tests, or None."""
    if shutil.which("node") is None:
        return "node is not on PATH: install Node.js >= 18 and run `npm ci`"
    if not (ROOT / "node_modules" / "playwright-core" / "package.json").is_file():
        return f"playwright-core is not installed: run `npm ci` in {ROOT}"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM}: `apt-get install chromium` (Debian) or set CHROMIUM"
    return None


class Browser:
    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self.version = ""

    async def __aenter__(self) -> Browser:
        missing = prerequisites()
        if missing:
            raise BrowserError(missing)
        self._proc = await asyncio.create_subprocess_exec(
            "node",
            str(SCRIPT),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "CHROMIUM": CHROMIUM},
        )
        self.version = str(await self._answer())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.returncode is None:
                await self.call("close")
                await asyncio.wait_for(proc.wait(), 10)
        except (BrowserError, TimeoutError, ConnectionError):
            pass
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def _answer(self) -> Any:
        assert self._proc is not None and self._proc.stdout is not None and self._proc.stderr is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), REQUEST_TIMEOUT_S)
        if not line:
            stderr = (await self._proc.stderr.read()).decode(errors="replace")
            raise BrowserError(f"the browser driver exited: {stderr.strip()[-2000:]}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise BrowserError(answer["error"])
        return answer["value"]

    async def call(self, cmd: str, **args: Any) -> Any:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        await self._proc.stdin.drain()
        return await self._answer()

    async def open(
        self, url: str, *, width: int = 1280, height: int = 720, offline: bool = False, init: str = ""
    ) -> str:
        """``offline``: requests to any other origin fail, as on a machine without a network.
        ``init``: a script run in the page before its own scripts (to record what it shows)."""
        return str(await self.call("open", url=url, width=width, height=height, offline=offline, init=init))

    async def eval(self, expr: str) -> Any:
        return await self.call("eval", expr=expr)

    async def wait(self, expr: str, *, timeout_s: float = 15.0) -> None:
        await self.call("wait", expr=expr, timeout=int(timeout_s * 1000))

    async def drag(self, x: int, y: int, dx: int, dy: int = 0) -> None:
        await self.call("drag", x=x, y=y, dx=dx, dy=dy)

    async def click_at(self, x: float, y: float, *, modifiers: tuple[str, ...] = ()) -> None:
        await self.call("click_at", x=x, y=y, modifiers=list(modifiers))

    async def chart(self) -> dict[str, str]:
        """The chart element's data-* attributes (the page mirrors its state there)."""
        return dict(await self.eval("Object.assign({}, document.getElementById('chart').dataset)"))

    async def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return Path(await self.call("screenshot", path=str(path)))

    async def errors(self) -> list[str]:
        return list(await self.call("errors"))

    async def requests(self) -> list[str]:
        """Every URL the page requested so far."""
        return list(await self.call("requests"))
