"""Run a command with real PostgreSQL and Redis available to it.

``python -m tests.services -- pytest ...``: when ``TEST_DATABASE_URL`` / ``TEST_REDIS_URL`` are set
they are used as given; otherwise the standard local ports are tried (127.0.0.1:5432 and :6379).
When nothing answers there, throwaway servers are started from the binaries on PATH (PostgreSQL's
``initdb``/``pg_ctl``, ``redis-server``) in a temporary folder and removed afterwards. When a binary
is missing, this says exactly what to install instead of failing later with a connection error.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@contextlib.contextmanager
def _throwaway_postgres() -> Iterator[str]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        sys.exit(
            "tests need PostgreSQL: set TEST_DATABASE_URL, run a server on 127.0.0.1:5432, "
            "or install the server binaries (Debian: apt-get install postgresql)"
        )
    tmp = tempfile.mkdtemp(prefix="th-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        os.chmod(tmp, 0o777)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = os.path.join(tmp, "data")
    subprocess.run(
        [*as_user, initdb, "-D", data, "-U", "postgres", "-A", "trust"], check=True, stdout=subprocess.DEVNULL
    )
    subprocess.run(
        [
            *as_user,
            pg_ctl,
            "-D",
            data,
            "-l",
            os.path.join(tmp, "log"),
            "-w",
            "-o",
            f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], check=False, stdout=subprocess.DEVNULL
        )
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _throwaway_redis() -> Iterator[str]:
    server = shutil.which("redis-server")
    if not server:
        sys.exit(
            "tests need Redis: set TEST_REDIS_URL, run a server on 127.0.0.1:6379, "
            "or install it (Debian: apt-get install redis-server)"
        )
    tmp = tempfile.mkdtemp(prefix="th-redis-")
    port = _free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            tmp,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        if _listening("127.0.0.1", port):
            break
        time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        sys.exit("usage: python -m tests.services -- COMMAND [ARGS...]")
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        if "TEST_DATABASE_URL" not in env:
            env["TEST_DATABASE_URL"] = (
                DEFAULT_PG if _listening("127.0.0.1", 5432) else stack.enter_context(_throwaway_postgres())
            )
        if "TEST_REDIS_URL" not in env:
            env["TEST_REDIS_URL"] = (
                DEFAULT_REDIS if _listening("127.0.0.1", 6379) else stack.enter_context(_throwaway_redis())
            )
        return subprocess.call(argv, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
