"""``trading-helper demo`` as a user starts it, on a throwaway database, for the demo's tests."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.db import fresh_database
from tests.services import _free_port


@asynccontextmanager
async def demo_process(
    admin_dsn: str, redis_url: str, cwd: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[int, str]]:
    """The demo in ``cwd`` with 20 instruments on a new database; yields its port and API token.
    Its Redis traffic (when it uses Redis) goes to database 12 under a stream of its own."""
    parts = urlsplit(redis_url)
    redis12 = urlunsplit((parts.scheme, parts.netloc, "/12", parts.query, parts.fragment))
    port = _free_port()
    async with fresh_database(admin_dsn, flavour=None, prefix="th_demo") as dsn:
        full = {k: v for k, v in os.environ.items() if k != "API_TOKEN"}
        full.update(DATABASE_URL=dsn, REDIS_URL=redis12, TICK_STREAM=f"th:ticks:demo:{uuid.uuid4().hex[:8]}")
        full.update(env or {})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "trading_helper.cli",
            "demo",
            "--port",
            str(port),
            "--instruments",
            "20",
            *args,
            cwd=cwd,
            env=full,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert proc.stdout is not None
        seen: list[str] = []
        try:
            async with asyncio.timeout(150):
                while not (match := re.search(r"#token=(\S+)", seen[-1] if seen else "")):
                    line = (await proc.stdout.readline()).decode()
                    assert line, "demo exited early:\n" + "".join(seen)
                    seen.append(line)
            yield port, match.group(1)
        finally:
            proc.send_signal(signal.SIGINT)
            out = (await asyncio.wait_for(proc.stdout.read(), timeout=60)).decode()
            assert await proc.wait() == 0, out
            assert "Traceback" not in out
