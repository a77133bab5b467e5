"""The soak's own processes: a ``redis-server`` with AOF on a free port, and ``trading-helper serve``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from trading_helper.errors import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` from /proc (Linux), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:g}s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


class RedisServer:
    """Our own Redis, AOF on (fsync every write), so a restart keeps the stream."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError("bench soak needs redis-server on PATH (it runs and restarts its own)")
        self.binary = binary
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        #: real time of the last start
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.starts += 1
        self.started_at = time.time()
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--protected-mode",
            "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await _wait_port(self.port, 10)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None


class ServeProcess:
    """``trading-helper serve`` as a child process, its log in ``workdir``."""

    def __init__(self, workdir: Path, env: dict[str, str], port: int) -> None:
        self.workdir = workdir
        self.env = env
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        #: real time of the last start
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        self.starts += 1
        self.started_at = time.time()
        log = open(self.workdir / f"serve-{self.starts}.log", "wb")  # noqa: ASYNC230 - once per start; the child owns it
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "trading_helper.cli",
                "serve",
                "--port",
                str(self.port),
                env={**os.environ, **self.env},
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )
        finally:
            log.close()
        await _wait_port(self.port, 30)

    async def kill(self) -> None:
        """SIGKILL: no chance to drain or commit."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None

    async def stop(self, timeout_s: float = 15.0) -> bool:
        """SIGTERM and wait; SIGKILL after ``timeout_s``. True when it stopped by itself."""
        if self.proc is None or self.proc.returncode is not None:
            return True
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
            clean = True
        except TimeoutError:
            await self.kill()
            clean = False
        self.proc = None
        return clean
