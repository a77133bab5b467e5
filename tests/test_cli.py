"""The CLI's errors for a malformed DATABASE_URL or REDIS_URL: one line naming the variable,
never its password, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    full = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **env}
    done = subprocess.run(
        [sys.executable, "-m", "trading_helper.cli", *args],
        env=full,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("env", "args", "names"),
    [
        (
            {"DATABASE_URL": "postgresql://me:Hunter2Secret@db:port/trading"},
            ("db", "migrate"),
            "DATABASE_URL",
        ),
        ({"DATABASE_URL": "mysql://me:Hunter2Secret@db/trading"}, ("db", "migrate"), "DATABASE_URL"),
        ({"REDIS_URL": "redis://:Hunter2Secret@cache:6379x/0"}, ("status",), "REDIS_URL"),
        (
            {"DATABASE_URL": "postgresql://me:p@ss:Hunter2Secret@db/trading"},
            ("db", "migrate"),
            "DATABASE_URL",
        ),
        (
            {"READ_DATABASE_URL": "postgresql://me:Hunter2Secret@replica:port/t"},
            ("db", "migrate"),
            "READ_DATABASE_URL",
        ),
        # behind pgBouncer the migration's session lock needs PostgreSQL itself
        (
            {"DATABASE_URL": "postgresql://me:Hunter2Secret@bouncer:6432/trading", "PGBOUNCER": "true"},
            ("db", "migrate"),
            "DIRECT_DATABASE_URL",
        ),
    ],
)
def test_a_malformed_url_is_one_line_naming_the_variable(
    tmp_path: Path, env: dict[str, str], args: tuple[str, ...], names: str
) -> None:
    code, output = run_cli(tmp_path, env, *args)
    assert code == 1, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], output
    assert "Hunter2Secret" not in output and "Traceback" not in output


def test_version_and_help_name_the_settings(tmp_path: Path) -> None:
    from trading_helper import __version__

    code, output = run_cli(tmp_path, {}, "--version")
    assert code == 0 and output.strip() == f"trading-helper {__version__}"
    code, output = run_cli(tmp_path, {"COLUMNS": "200"}, "--help")
    assert code == 0 and all(
        word in output for word in ("DATABASE_URL", "REDIS_URL", ".env", "serve", "--version")
    )


def test_serve_help_shows_no_made_up_defaults(tmp_path: Path) -> None:
    code, output = run_cli(tmp_path, {"COLUMNS": "200"}, "serve", "--help")
    assert code == 0 and "API_PORT" in output and "API_HOST" in output
    assert "[default: 0]" not in output and "[default: ]" not in output
    code, output = run_cli(tmp_path, {"COLUMNS": "200"}, "login", "fyers", "--help")
    assert code == 0 and "--paste" in output and "container" in output


def test_serve_behind_pgbouncer_without_a_direct_url_is_one_line(tmp_path: Path) -> None:
    """The ingest service's LISTEN through transaction pooling would hear nothing: refused at start.
    (A replica, --no-ingest, needs no session and starts.)"""
    from tests.services import _free_port

    env = {
        "DATABASE_URL": "postgresql://me:Hunter2Secret@127.0.0.1:1/trading",
        "PGBOUNCER": "true",
        "BROKER": "sim",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "API_TOKEN": "t" * 24,
    }
    code, output = run_cli(tmp_path, env, "serve", "--port", str(_free_port()))
    assert code == 1, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: PGBOUNCER=true: set DIRECT_DATABASE_URL"), output
    assert "Hunter2Secret" not in output and "Traceback" not in output
