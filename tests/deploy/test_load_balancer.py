"""deploy/nginx.conf, the scale profile's load balancer, run for real (Debian's nginx) in front of
two ``trading-helper serve --no-ingest`` replicas: requests are spread over both, a WebSocket is
upgraded through it and carries the ticks a replica relays from Redis pub/sub, and a replica that
dies is skipped. Only the replicas' addresses and the listen address are changed from the file.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from tests.api.conftest import API_TOKEN
from tests.api.test_serve_command import Serve, prepare, serve_env, serving
from tests.services import _free_port, _listening, _throwaway_redis
from trading_helper.ingest import codec, keys
from trading_helper.models import Tick

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"


def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found is None:
        pytest.fail("this test needs nginx: apt-get install nginx-light", pytrace=False)
    return found


def balancer_conf(ports: tuple[int, int], listen: int) -> str:
    """deploy/nginx.conf with the replicas on 127.0.0.1 and the balancer on ``listen``."""
    conf = CONF.read_text()
    for n, port in enumerate(ports, start=1):
        conf, found = re.subn(rf"\bapi-replica-{n}:8000\b", f"127.0.0.1:{port}", conf)
        assert found == 1, f"api-replica-{n} not in deploy/nginx.conf"
    conf, found = re.subn(
        r"^(\s*)listen 8080;", rf"\g<1>listen 127.0.0.1:{listen};", conf, flags=re.MULTILINE
    )
    assert found == 1
    return conf


@pytest.fixture
def nginx_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="th-nginx-"))
    os.chmod(folder, 0o777)  # its workers run as an unprivileged user when started as root
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def start_nginx(folder: Path, conf: str, port: int) -> subprocess.Popen[bytes]:
    (folder / "default.conf").write_text(conf)
    (folder / "nginx.conf").write_text(
        f"""daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/default.conf;
}}
"""
    )
    binary = _nginx()
    check = subprocess.run(
        [binary, "-t", "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(folder / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [binary, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(folder / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _listening("127.0.0.1", port):
        assert proc.poll() is None, (folder / "error.log").read_text()
        assert time.monotonic() < deadline, "nginx did not listen"
        time.sleep(0.05)
    return proc


async def health_requests(replica: Serve) -> int:
    metrics = (await replica.client.get("/metrics")).text
    found = re.search(
        r'^th_http_requests_total\{method="GET",route="/health",status="200"\} (\S+)$', metrics, re.M
    )
    return int(float(found.group(1))) if found else 0


async def test_the_balancer_spreads_requests_upgrades_websockets_and_skips_a_dead_replica(
    tmp_path: Path, db_pool: asyncpg.Pool, db_dsn: str, nginx_folder: Path
) -> None:
    await prepare(db_pool)
    iid = await db_pool.fetchval("SELECT min(instrument_id) FROM instrument_broker_ids WHERE broker = 'sim'")
    with _throwaway_redis() as redis_url:
        env = serve_env(db_dsn, redis_url, f"th:lb:{uuid.uuid4().hex[:8]}")
        async with serving(tmp_path, env, "--no-ingest") as one, serving(tmp_path, env, "--no-ingest") as two:
            port = _free_port()
            proc = start_nginx(nginx_folder, balancer_conf((one.port, two.port), port), port)
            redis = aioredis.Redis.from_url(redis_url)
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as lb:
                    before = [await health_requests(r) for r in (one, two)]
                    for _ in range(20):
                        assert (await lb.get("/health")).status_code == 200
                    after = [await health_requests(r) for r in (one, two)]
                    spread = [a - b for a, b in zip(after, before, strict=True)]
                    assert sum(spread) == 20 and min(spread) >= 5, spread  # round robin: 10 and 10

                    # a WebSocket through the balancer, fed by the replica's Redis subscription
                    async with connect(f"ws://127.0.0.1:{port}/api/ws/ticks?token={API_TOKEN}") as ws:
                        await ws.send(json.dumps({"action": "subscribe", "instruments": [f"id:{iid}"]}))
                        async with asyncio.timeout(5):
                            assert json.loads(await ws.recv())["type"] == "subscribed"
                        now = datetime.now(UTC)
                        tick = Tick(
                            instrument_id=iid, exchange_ts=now, received_ts=now, last_price=4321.5, volume=10
                        )
                        async with asyncio.timeout(10):
                            while True:  # published until the replica's hub relays one
                                await redis.publish(keys.LIVE_CHANNEL, codec.encode_ticks([tick]))
                                try:
                                    async with asyncio.timeout(0.5):
                                        message = json.loads(await ws.recv())
                                except TimeoutError:
                                    continue
                                if message["type"] == "tick":
                                    break
                        assert message["data"]["instrument_id"] == iid
                        assert message["data"]["last_price"] == 4321.5

                    # one replica dies: every request is still answered, by the other
                    one.proc.kill()
                    await one.proc.wait()
                    answers = [(await lb.get("/health")).status_code for _ in range(10)]
                    assert answers == [200] * 10, answers
            finally:
                await redis.aclose()
                proc.terminate()
                proc.wait(timeout=10)
