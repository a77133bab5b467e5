"""``trading-helper serve`` as its own process (the real CLI, the real uvicorn), for tests that
measure that process (its memory) or read everything it writes (its logs)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    url: str
    pid: int
    output: Path  # stdout and stderr of the process

    def status_kb(self, field: str) -> int:
        """A ``/proc/<pid>/status`` figure in kB (VmRSS, VmHWM)."""
        text = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
        assert match is not None, field
        return int(match.group(1))

    def reset_peak(self) -> None:
        """Make VmHWM start again from the current resident size (Linux: ``clear_refs`` 5)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")


@asynccontextmanager
async def serve_process(env: dict[str, str], workdir: Path, *args: str) -> AsyncIterator[Served]:
    """Run ``trading-helper serve --no-ingest`` with exactly ``env`` (plus PATH and HOME) in
    ``workdir`` (so no stray ``.env`` is read) until ``/health`` answers; stopped with SIGINT."""
    port = free_port()
    output = workdir / "serve.log"
    full = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(workdir),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        **env,
    }
    with output.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "trading_helper.cli",
            "serve",
            "--no-ingest",
            *args,
            env=full,
            cwd=workdir,
            stdout=sink,
            stderr=sink,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(START_TIMEOUT_S):
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"serve exited {proc.returncode}: {output.read_text()[-2000:]}")
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        yield Served(url, proc.pid, output)
    finally:
        if proc.returncode is None:
            proc.send_signal(2)
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
