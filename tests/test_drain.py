"""SIGTERM drains: an upload still streaming into the ingress is received and answered before it exits;
`attachd dev` stopped at any moment of its start leaves nothing running."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time

import aiohttp
import jwt
import psutil
import pytest

from services.embedded import free_port
from tests.conftest import JWT_SECRET
from tests.test_cli import ATTACHD, part_env, processes_using, read_until, spawn, wait_ready

HEAD = (
    b"--b\r\nContent-Disposition: form-data; name=target_type\r\n\r\nTask\r\n"
    b"--b\r\nContent-Disposition: form-data; name=target_id\r\n\r\n1\r\n"
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="d.txt"\r\n\r\n'
)
TAIL = b"\r\n--b--\r\n"
LENGTH = len(HEAD) + 2_000_000 + len(TAIL)


async def test_sigterm_lets_an_upload_in_flight_finish_then_exits(pg_url, redis_url, tmp_path):
    env = part_env(pg_url, redis_url, tmp_path, ATTACHD_SHUTDOWN_GRACE_S="20")
    subprocess.run([*ATTACHD, "migrate"], env={**os.environ, **env}, check=True, capture_output=True)
    ingress_port, worker_port = free_port(), free_port()
    ingress = spawn("ingress", "--port", str(ingress_port), env=env)
    worker = spawn("worker", "--port", str(worker_port), env=env)
    token = jwt.encode({"account": "drain", "sub": "u", "scope": "attachments:write"}, JWT_SECRET, algorithm="HS256")
    base = f"http://127.0.0.1:{ingress_port}"
    halfway = asyncio.Event()
    try:
        for port in (ingress_port, worker_port):
            await wait_ready(f"http://127.0.0.1:{port}/readyz")

        async def body():
            yield HEAD
            for _ in range(20):
                yield b"x" * 50_000
                await asyncio.sleep(0.05)
            halfway.set()
            await asyncio.sleep(1.0)  # the ingress is draining now
            for _ in range(20):
                yield b"y" * 50_000
            yield TAIL

        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "multipart/form-data; boundary=b",
            "Content-Length": str(LENGTH),
        }
        async with aiohttp.ClientSession() as http:
            upload = asyncio.create_task(http.post(f"{base}/v1/attachments", data=body(), headers=headers))
            await halfway.wait()
            ingress.send_signal(signal.SIGTERM)
            resp = await upload
            assert resp.status == 201, await resp.text()
            record = await resp.json()
            assert record["size"] == 2_000_000 and record["filename"] == "d.txt"
        await asyncio.to_thread(ingress.wait, 30)
        assert ingress.returncode == 0
        with pytest.raises(aiohttp.ClientConnectionError):  # and it takes no new work
            async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz"):
                pass
    finally:
        for proc in (ingress, worker):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in (ingress, worker):
            proc.wait(60)


@pytest.mark.parametrize("moment", ["engines starting", "first ready"])
async def test_attachd_dev_stopped_while_it_starts_leaves_nothing_running(tmp_path, moment):
    data_dir = tmp_path / "data"
    port = free_port()
    proc = spawn("dev", "--port", str(port), "--data-dir", str(data_dir))
    try:
        if moment == "engines starting":
            await asyncio.to_thread(read_until, proc, "starting Postgres")
            await asyncio.sleep(0.5)
        else:
            await wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=90)
        started = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 1), proc.stdout.read()
    psutil.wait_procs(started, timeout=15)
    deadline = time.monotonic() + 15
    while processes_using(data_dir) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert processes_using(data_dir) == [], "an engine of attachd dev was left running"
