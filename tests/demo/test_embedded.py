"""The pip-installed PostgreSQL: created once, migrated, stopped cleanly, and its data kept."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from trading_helper.demo.embedded import RUN_AS, embedded_postgres, tcp_dsn
from trading_helper.errors import StorageError
from trading_helper.storage.migrate import migrate


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # not pytest's tmp_path: as root, the server's own user must be able to reach the folder
    root = Path(tempfile.mkdtemp(prefix="th-embedded-"))
    try:
        yield root / "pgdata"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def server_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("Uid:")).split()[1])


def make_foreign_folder(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "notes.txt").write_text("mine")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_start_migrate_stop_and_restart_keeps_the_data(data_dir: Path) -> None:
    said: list[str] = []
    async with embedded_postgres(data_dir, progress=said.append) as dsn:
        report = await migrate(dsn)
        assert report.flavour == "postgres"
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("INSERT INTO instruments (exchange, tradingsymbol) VALUES ('NSE', 'KEEPME')")
            pid = server_pid(data_dir)
            if os.geteuid() == 0:  # PostgreSQL refuses root: it must run as its own user
                assert uid_of(pid) == pwd.getpwnam(RUN_AS).pw_uid != 0
        finally:
            await conn.close()
    assert any("creating the database cluster" in m for m in said)
    assert not alive(pid) and not (data_dir / "postmaster.pid").exists()

    said.clear()
    async with embedded_postgres(data_dir, progress=said.append) as dsn:
        assert (await migrate(dsn)).applied == []
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM instruments WHERE tradingsymbol = 'KEEPME'") == 1
        finally:
            await conn.close()
    assert not any("creating" in m for m in said)


async def test_tcp_needs_a_password_and_the_grafana_role_gets_one(data_dir: Path) -> None:
    async with embedded_postgres(data_dir, tcp_port=0) as dsn:
        await migrate(dsn, reader_password="reader-pass-42")
        reader = await asyncpg.connect(tcp_dsn(dsn, user="grafana_reader", password="reader-pass-42"))
        try:
            assert await reader.fetchval("SELECT count(*) FROM candles_5m") == 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.execute("DELETE FROM tick_data")
        finally:
            await reader.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(tcp_dsn(dsn, user="grafana_reader", password="wrong"))
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(tcp_dsn(dsn, user="postgres", password=""))


async def test_a_second_server_on_the_same_folder_is_refused(data_dir: Path) -> None:
    async with embedded_postgres(data_dir):
        with pytest.raises(StorageError, match="already uses"):
            async with embedded_postgres(data_dir):
                pass


async def test_a_folder_that_is_not_a_cluster_is_left_alone(data_dir: Path) -> None:
    make_foreign_folder(data_dir)
    with pytest.raises(StorageError, match="not a PostgreSQL data folder"):
        async with embedded_postgres(data_dir):
            pass
    assert os.listdir(data_dir) == ["notes.txt"]
