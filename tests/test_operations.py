"""Operating attachd: JSON logs with the request's ids, X-Request-ID end to end, the access log, no versions in
Server, and start-up that refuses weak secrets and names what it cannot reach, in one line."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from yarl import URL

from services.core import logs
from services.embedded import free_port
from tests.conftest import JWT_SECRET, jpeg_bytes
from tests.test_cli import ATTACHD, part_env, wait_ready
from tests.test_uploads import multipart

TOKEN_CLAIMS = {"sub": "u1", "scope": "attachments:read attachments:write"}


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a log, each line one; anything else on a line fails the test."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def spawn_logged(part: str, port: int, env: dict[str, str], log_dir: Path) -> tuple[subprocess.Popen, Path]:
    """``attachd <part>`` with its stderr (the log) in a file: a pipe nobody reads would block it."""
    path = log_dir / f"{part}-{port}.log"
    with open(path, "wb") as out:
        proc = subprocess.Popen(
            [*ATTACHD, part, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    return proc, path


def stop_all(procs: list[subprocess.Popen]) -> list[int]:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(60))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes


# Formatting


def test_a_json_line_has_the_ids_bound_in_its_context():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("attachd.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with logs.bound(request_id="req-1", account="acme", attachment_id="a-1"):
            logger.warning("stored %d bytes", 12, extra={"bytes": 12})
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("it failed")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    first, failed, outside = json_lines(out.getvalue())
    assert first["msg"] == "stored 12 bytes" and first["level"] == "warning" and first["logger"] == "attachd.test.json"
    ids = (first["request_id"], first["account"], first["attachment_id"], first["bytes"])
    assert ids == ("req-1", "acme", "a-1", 12)
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert "ValueError: boom" in failed["exc"] and failed["request_id"] == "req-1"
    assert "request_id" not in outside and "account" not in outside


def test_a_text_line_names_the_ids_after_the_message():
    formatter = logs.TextFormatter()
    record = logging.LogRecord("attachd", logging.INFO, __file__, 1, "hello", None, None)
    with logs.bound(request_id="req-2", account="acme"):
        assert formatter.format(record).endswith("hello [request_id=req-2 account=acme]")
    assert formatter.format(record).endswith("hello")


def test_the_log_format_setting_takes_json_or_text_only():
    from services.core.settings import load_settings

    assert load_settings({}).log_format == "json"
    assert load_settings({"ATTACHD_LOG_FORMAT": "TEXT"}).log_format == "text"
    with pytest.raises(ValueError, match="ATTACHD_LOG_FORMAT"):
        load_settings({"ATTACHD_LOG_FORMAT": "xml"})


def test_the_parts_log_json_and_the_commands_people_run_log_text(monkeypatch):
    from services.cli import _log_format

    monkeypatch.delenv("ATTACHD_LOG_FORMAT", raising=False)
    assert [_log_format(c) for c in ("ingress", "query", "worker", "migrate")] == ["json"] * 4
    assert [_log_format(c) for c in ("dev", "token", "limits")] == ["text"] * 3
    monkeypatch.setenv("ATTACHD_LOG_FORMAT", "json")
    assert _log_format("dev") == "json"
    monkeypatch.setenv("ATTACHD_LOG_FORMAT", "yaml")
    with pytest.raises(SystemExit) as stopped:
        _log_format("ingress")
    assert stopped.value.code == 2


# Request ids, Server and the access log, in process


async def test_every_response_carries_a_request_id_and_no_versions(service):
    client = service.client
    sent = "trace-1.A_b"
    resp = await client.get("/healthz", headers={"X-Request-ID": sent})
    assert resp.headers["X-Request-ID"] == sent
    assert resp.headers["Server"] == "attachd"
    for bad in ("x" * 129, "has space", "semi;colon", ""):
        resp = await client.get("/healthz", headers={"X-Request-ID": bad})
        made = resp.headers["X-Request-ID"]
        assert made != bad and len(made) == 32
    ids = set()
    for method, path, status in (
        ("GET", "/v1/attachments", 401),  # no token
        ("GET", "/nowhere", 404),
        ("DELETE", "/v1/attachments/count", 405),
        ("GET", "/v1/attachments?limit=x&limit=y", 400),
    ):
        resp = await client.request(method, path)
        assert resp.status == status
        assert resp.headers["Server"] == "attachd"
        ids.add(resp.headers["X-Request-ID"])
    assert len(ids) == 4, "each request gets its own id"

    # Refused by the HTTP parser, before any middleware: the error shape, an id, and no versions either.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: keep\r\nCookie: " + b"c" * 9000 + b"\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    assert " 431 " in head.splitlines()[0]
    assert "\r\nServer: attachd" in head and "Python" not in head and "aiohttp" not in head
    assert "\r\nX-Request-ID: " in head


async def test_the_access_log_has_one_line_per_request_and_no_secret(service, caplog):
    caplog.set_level(logging.DEBUG, logger="attachd.access")
    auth = service.auth()
    photo = jpeg_bytes(320, 240)
    resp = await service.client.post(
        "/v1/attachments",
        headers={**auth, "X-Request-ID": "upload-1"},
        data=multipart(("p.jpg", photo, "image/jpeg"), target_type="Task", target_id="7"),
    )
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    link = URL(record["file"]["original"])
    signature = link.query["signature"]
    resp = await service.client.get(link.path_qs)
    assert resp.status == 200 and await resp.read() == photo
    resp = await service.client.get("/v1/attachments?target_type=Task&target_id=7", headers=auth)
    assert resp.status == 200

    lines = [r for r in caplog.records if r.name == "attachd.access"]
    by_path = {(r.method, r.path): r for r in lines}
    upload = by_path[("POST", "/v1/attachments")]
    assert upload.status == 201 and upload.request_id == "upload-1" and upload.account == service.account
    assert upload.duration_ms > 0 and upload.bytes > 0 and upload.levelno == logging.INFO
    download = by_path[("GET", f"/v1/files/{record['id']}/original")]
    # bytes: what went out on the connection, the head included (as aiohttp counts it)
    assert download.status == 200 and len(photo) < download.bytes < len(photo) + 2048
    assert download.account == service.account
    listing = by_path[("GET", "/v1/attachments")]
    assert listing.status == 200 and listing.account == service.account
    token = auth["Authorization"].split()[1]
    formatter = logs.JsonFormatter()
    for line in lines:
        text = formatter.format(line)
        assert signature not in text and token not in text and "?" not in line.path
    assert len([r for r in lines if r.path == "/v1/attachments" and r.method == "POST"]) == 1


# The parts as processes: JSON logs and the request id from the ingress into the worker's lines


async def test_the_request_id_of_an_upload_is_on_the_workers_line_for_it(pg_url, redis_url, tmp_path):
    env = part_env(pg_url, redis_url, tmp_path)
    env.pop("ATTACHD_LOG_FORMAT", None)
    ingress_port, worker_port = free_port(), free_port()
    (ingress, ingress_log), (worker, worker_log) = (
        spawn_logged("ingress", ingress_port, env, tmp_path),
        spawn_logged("worker", worker_port, env, tmp_path),
    )
    token = jwt.encode({**TOKEN_CLAIMS, "account": "ops-logs"}, JWT_SECRET, algorithm="HS256")
    rid = f"upload-{time.time_ns()}"
    try:
        for port in (ingress_port, worker_port):
            await wait_ready(f"http://127.0.0.1:{port}/readyz")
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{ingress_port}/v1/attachments",
                data=multipart(("p.jpg", jpeg_bytes(320, 240), "image/jpeg"), target_type="Task", target_id="1"),
                headers={"Authorization": f"Bearer {token}", "X-Request-ID": rid},
            ) as resp:
                assert resp.status == 201, await resp.text()
                assert resp.headers["X-Request-ID"] == rid and resp.headers["Server"] == "attachd"
                upload_id = (await resp.json())["id"]
            async with http.get(f"http://127.0.0.1:{worker_port}/healthz") as resp:
                assert resp.headers["Server"] == "attachd" and "X-Request-ID" in resp.headers
    finally:
        assert stop_all([ingress, worker]) == [0, 0]

    worker_lines = json_lines(worker_log.read_text())  # every line is JSON: the default of `attachd worker`
    done = [line for line in worker_lines if line.get("request_id") == rid]
    assert done, "the worker logged nothing with the upload's request id"
    committed = next(line for line in done if line.get("result") == "committed")
    assert committed["logger"] == "attachd.jobs" and committed["function"] == "ingest"
    assert (committed["job_id"], committed["attachment_id"], committed["account"]) == (upload_id, upload_id, "ops-logs")
    assert {"ts", "level", "logger", "msg"} <= committed.keys()

    ingress_text = ingress_log.read_text()
    assert token not in ingress_text and "Bearer" not in ingress_text
    access = [line for line in json_lines(ingress_text) if line["logger"] == "attachd.access"]
    upload = next(line for line in access if line["request_id"] == rid)
    assert (upload["method"], upload["path"], upload["status"], upload["account"]) == (
        "POST",
        "/v1/attachments",
        201,
        "ops-logs",
    )
    assert upload["duration_ms"] > 0 and upload["bytes"] > 0


# Start-up checks


def run_part(part: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ATTACHD, part, "--port", str(free_port())],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def the_one_line(result: subprocess.CompletedProcess, *needles: str) -> dict[str, Any]:
    """The JSON log line that says why the part did not start: the only critical one, and no traceback."""
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    lines = json_lines(result.stderr)
    critical = [line for line in lines if line["level"] == "critical"]
    assert len(critical) == 1, result.stderr
    for needle in needles:
        assert needle in critical[0]["msg"], critical[0]["msg"]
    assert "exc" not in critical[0]
    return critical[0]


@pytest.mark.parametrize("part", ["ingress", "query", "worker"])
@pytest.mark.parametrize("variable", ["ATTACHD_JWT_SECRET", "ATTACHD_SIGNING_SECRET"])
def test_a_secret_shorter_than_32_bytes_refuses_to_start(pg_url, redis_url, tmp_path, part, variable):
    env = {**part_env(pg_url, redis_url, tmp_path), variable: "x" * 31}
    result = run_part(part, env)
    assert result.returncode == 2
    the_one_line(result, variable, "31 bytes", "at least 32")
    assert "listening" not in result.stderr


def test_a_missing_secret_refuses_to_start_in_one_line(pg_url, redis_url, tmp_path):
    env = part_env(pg_url, redis_url, tmp_path)
    env["ATTACHD_JWT_SECRET"] = ""
    result = run_part("query", env)
    assert result.returncode == 2
    the_one_line(result, "ATTACHD_JWT_SECRET", "ATTACHD_JWT_PUBLIC_KEY")
    env["ATTACHD_JWT_PUBLIC_KEY"] = "-----BEGIN PUBLIC KEY-----"  # verifies tokens, but signs no link
    result = run_part("ingress", env)
    assert result.returncode == 2
    the_one_line(result, "ATTACHD_SIGNING_SECRET")


def test_a_setting_that_does_not_parse_refuses_to_start_in_one_line(pg_url, redis_url, tmp_path):
    result = run_part("ingress", {**part_env(pg_url, redis_url, tmp_path), "ATTACHD_PORT": "eighty"})
    assert result.returncode == 2
    the_one_line(result, "ATTACHD_PORT")


async def test_an_unreachable_postgres_or_redis_is_named_with_its_url_without_password(pg_url, redis_url, tmp_path):
    closed = free_port()  # nothing listens there
    env = part_env(pg_url, redis_url, tmp_path)
    no_postgres = {**env, "ATTACHD_DATABASE_URL": f"postgresql://attachd:hunter2@127.0.0.1:{closed}/attachd"}
    no_redis = {**env, "ATTACHD_REDIS_URL": f"redis://:hunter2@127.0.0.1:{closed}/0"}
    # Side by side: Redis is retried for some 10 s before a part gives up on it.
    query, worker, ingress = await asyncio.gather(
        asyncio.to_thread(run_part, "query", no_postgres),
        asyncio.to_thread(run_part, "worker", no_postgres),
        asyncio.to_thread(run_part, "ingress", no_redis, 90),
    )
    for result in (query, worker):
        assert result.returncode == 1
        the_one_line(result, "Postgres", f"postgresql://attachd@127.0.0.1:{closed}/attachd")
        assert "hunter2" not in result.stderr
    assert ingress.returncode == 1
    the_one_line(ingress, "Redis", f"redis://127.0.0.1:{closed}/0")
    assert "hunter2" not in ingress.stderr


def test_a_url_loses_its_password_and_nothing_else():
    from services.core.startup import redacted_url

    assert redacted_url("postgresql://u:p%40ss@db:5432/x?sslmode=require") == "postgresql://u@db:5432/x?sslmode=require"
    assert redacted_url("postgresql://db/x?user=u&password=p") == "postgresql://db/x?user=u"
    assert redacted_url("redis://:secret@cache:6379/0") == "redis://cache:6379/0"
    assert redacted_url("redis://cache:6379/0") == "redis://cache:6379/0"
