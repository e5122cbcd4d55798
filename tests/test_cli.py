"""The attachd command as a user runs it: `attachd dev`, the separate parts, `attachd token`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import jwt
import psutil
import pytest
import pyvips
from aiohttp import web

from services.embedded import free_port
from tests.conftest import JWT_SECRET, jpeg_bytes

ATTACHD = [sys.executable, "-m", "services.cli"]


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*ATTACHD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def part_env(pg_url: str, redis_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The settings an attachd part needs against the test run's Postgres and Redis and a storage dir."""
    return {
        "ATTACHD_DATABASE_URL": pg_url,
        "ATTACHD_REDIS_URL": redis_url,
        "ATTACHD_STORAGE_URL": f"file://{tmp_path / 'files'}",
        "ATTACHD_JWT_SECRET": JWT_SECRET,
        "ATTACHD_HOST": "127.0.0.1",
        **extra,
    }


def read_until(proc: subprocess.Popen, marker: str, timeout: float = 90) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line.rstrip())
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} never appeared:\n" + "\n".join(lines))


def processes_using(path: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(str(path) in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
    return found


async def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} never became ready")


async def upload_and_list(http: aiohttp.ClientSession, write_url: str, read_url: str, token: str) -> dict:
    auth = {"Authorization": f"Bearer {token}"}
    form = aiohttp.FormData()
    form.add_field("target_type", "Task")
    form.add_field("target_id", "42")
    form.add_field("file", jpeg_bytes(640, 480), filename="photo.jpg", content_type="image/jpeg")
    async with http.post(f"{write_url}/v1/attachments", data=form, headers=auth) as resp:
        assert resp.status == 201, await resp.text()
        record = await resp.json()
    async with http.get(f"{read_url}/v1/attachments?target_type=Task&target_id=42", headers=auth) as resp:
        listed = await resp.json()
    assert [a["id"] for a in listed["attachments"]] == [record["id"]]
    async with http.get(f"{read_url}/v1/attachments/{record['id']}/file/thumbnail", headers=auth) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
    return record


async def readme_walkthrough(http: aiohttp.ClientSession, base: str, token: str, photo_url: str) -> None:
    """The README's curl walkthrough, step by step, as a client would run it against `attachd dev`."""
    auth = {"Authorization": f"Bearer {token}"}
    photo = jpeg_bytes(1200, 800)
    form = aiohttp.FormData()
    for key, value in (("target_type", "Task"), ("target_id", "42"), ("name", "Site visit")):
        form.add_field(key, value)
    form.add_field("file", photo, filename="photo.jpg", content_type="image/jpeg")
    uploads = [
        http.post(f"{base}/v1/attachments", data=form, headers=auth),  # 1
        http.post(
            f"{base}/v1/attachments",
            headers=auth,
            json={  # 2
                "target_type": "Task",
                "target_id": "42",
                "filename": "copy.jpg",
                "data": base64.b64encode(photo).decode(),
            },
        ),
        http.post(
            f"{base}/v1/attachments",
            headers=auth,
            json={  # 3
                "target_type": "Task",
                "target_id": "42",
                "url": photo_url,
            },
        ),
    ]
    for upload in uploads:
        async with upload as resp:
            assert resp.status == 201, await resp.text()
            assert (await resp.json())["width"] == 1200
    async with http.get(
        f"{base}/v1/attachments?target_type=Task&target_id=42&order_by=-created_at",  # 4
        headers=auth,
    ) as resp:
        listed = (await resp.json())["attachments"]
    assert [a["name"] for a in listed] == ["photo.jpg", "copy.jpg", "Site visit"]
    newest = listed[0]["id"]
    async with http.get(f"{base}/v1/attachments/{newest}/file/thumbnail", headers=auth) as resp:  # 5
        thumb = pyvips.Image.new_from_buffer(await resp.read(), "")
    assert (thumb.width, thumb.height) == (72, 48)
    async with http.patch(f"{base}/v1/attachments/{newest}", json={"name": "Front door"}, headers=auth) as resp:
        assert resp.status == 200 and (await resp.json())["name"] == "Front door"  # 6
    async with http.delete(f"{base}/v1/attachments/{newest}", headers=auth) as resp:  # 7
        assert resp.status == 204
    async with http.get(f"{base}/v1/attachments/count?target_type=Task&target_id=42", headers=auth) as resp:
        assert (await resp.json())["count"] == 2


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
async def test_attachd_dev_runs_the_walkthrough_and_stops_cleanly(tmp_path, aiohttp_server, stop_signal):
    async def photo(_: web.Request) -> web.Response:
        return web.Response(body=jpeg_bytes(1200, 800), content_type="image/jpeg")

    photo_server = web.Application()
    photo_server.router.add_get("/photo.jpg", photo)
    photos = await aiohttp_server(photo_server, host="127.0.0.1")
    data_dir = tmp_path / "data"
    port = free_port()
    proc = spawn(
        "dev", "--port", str(port), "--data-dir", str(data_dir), env={"ATTACHD_FETCH_ALLOW_CIDRS": "127.0.0.1/32"}
    )  # as the README's walkthrough runs it
    started: list[psutil.Process] = []
    try:
        lines = await asyncio.to_thread(read_until, proc, "export ATTACHD_TOKEN=")
        assert f"http://127.0.0.1:{port}" in "\n".join(lines)
        token = lines[-1].split("=", 1)[1]
        base = f"http://127.0.0.1:{port}"
        await wait_ready(f"{base}/readyz")
        started = psutil.Process(proc.pid).children(recursive=True)
        assert processes_using(data_dir), "embedded Postgres should be running"
        async with aiohttp.ClientSession() as http:
            await readme_walkthrough(http, base, token, str(photos.make_url("/photo.jpg")))

        minted = subprocess.run(
            [*ATTACHD, "token", "--data-dir", str(data_dir), "--account", "dev"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        secret = (data_dir / "jwt-secret").read_text().strip()
        assert jwt.decode(minted, secret, algorithms=["HS256"])["account"] == "dev"
    finally:
        proc.send_signal(stop_signal)
        proc.wait(60)
    assert proc.returncode == 0
    assert started, "attachd dev should have started Postgres and Redis as child processes"
    _gone, alive = psutil.wait_procs(started, timeout=15)
    assert alive == [], f"left running: {[p.info for p in alive]}"
    assert processes_using(data_dir) == []


async def refuses_at_the_connection(port: int) -> None:
    """What the HTTP parser refuses is answered in the error shape, and a request head that stops arriving
    is answered 408 once ATTACHD_HEADER_TIMEOUT_S has passed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 9000 + b"\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.0 431 ") and b'"code":"header_too_large"' in answer and b"ccc" not in answer
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ready")
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 5


async def test_the_parts_run_as_separate_processes(pg_url, redis_url, tmp_path):
    ingress_port, query_port, worker_port = free_port(), free_port(), free_port()
    env = part_env(pg_url, redis_url, tmp_path, ATTACHD_HEADER_TIMEOUT_S="1")
    for _ in range(2):  # the schema applies twice without harm
        migrated = subprocess.run([*ATTACHD, "migrate"], env={**os.environ, **env}, capture_output=True, text=True)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    procs = [
        spawn("ingress", "--port", str(ingress_port), env=env),
        spawn("query", "--port", str(query_port), env=env),
        spawn("worker", "--port", str(worker_port), env=env),
    ]
    try:
        for port in (ingress_port, query_port, worker_port):
            await wait_ready(f"http://127.0.0.1:{port}/readyz")
        # The image's HEALTHCHECK: one port, or the default ones (ATTACHD_PORT, then the worker's 8081).
        healthy = subprocess.run([*ATTACHD, "healthcheck", "--port", str(worker_port)], capture_output=True)
        assert healthy.returncode == 0, healthy.stderr
        default_ports = {**os.environ, "ATTACHD_PORT": str(query_port)}
        assert subprocess.run([*ATTACHD, "healthcheck"], env=default_ports, capture_output=True).returncode == 0
        unhealthy = subprocess.run([*ATTACHD, "healthcheck", "--port", str(free_port())], capture_output=True)
        assert unhealthy.returncode == 1 and b"/healthz did not answer 200" in unhealthy.stderr
        token = jwt.encode(
            {"account": "parts", "sub": "u1", "scope": "attachments:read attachments:write"},
            JWT_SECRET,
            algorithm="HS256",
        )
        async with aiohttp.ClientSession() as http:
            await upload_and_list(http, f"http://127.0.0.1:{ingress_port}", f"http://127.0.0.1:{query_port}", token)
            async with http.get(f"http://127.0.0.1:{worker_port}/metrics") as resp:
                assert resp.status == 200
            # The ingress serves writes only and the query service reads only.
            async with http.get(f"http://127.0.0.1:{ingress_port}/v1/attachments") as resp:
                assert resp.status == 405
        for port in (ingress_port, query_port):
            await refuses_at_the_connection(port)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
    assert [p.returncode for p in procs] == [0, 0, 0]


def test_create_bucket_makes_the_storage_bucket_once(s3_endpoint):
    """`attachd create-bucket`, for a local S3 server's first start (compose.yaml, the dev overlay)."""
    bucket = f"made-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "ATTACHD_STORAGE_URL": f"s3://{bucket}/files", "ATTACHD_S3_ENDPOINT_URL": s3_endpoint}
    outputs = [
        subprocess.run([*ATTACHD, "create-bucket"], env=env, capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    assert outputs == [f"bucket {bucket} created\n", f"bucket {bucket} exists\n"]
    nowhere = {**env, "ATTACHD_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    refused = subprocess.run([*ATTACHD, "create-bucket", "--wait", "1"], env=nowhere, capture_output=True, text=True)
    assert refused.returncode == 1 and "did not answer within 1 s" in refused.stderr
