"""Scaled out as in production: 2 ingress, 2 query and 3 worker processes on one Postgres, one Redis and S3,
sharing no local disk. Every upload, whichever ingress took it and whichever worker ran it, is committed
exactly once with its variants, and reads the same from both query processes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from pathlib import Path

import aiohttp
import boto3
import jwt
import redis.asyncio as aioredis

from services.embedded import free_port
from tests.conftest import JWT_SECRET, jpeg_bytes, png_bytes
from tests.test_cli import wait_ready
from tests.test_observability import METRIC, alert_rules, dashboard_exprs, exported
from tests.test_operations import json_lines, spawn_logged, stop_all

UPLOADS = 12  # half of them images, over both ingresses


def upload_body(index: int) -> tuple[str, bytes, bool]:
    """The filename, bytes and whether it is an image (that gets variants) of upload ``index``."""
    kind = index % 4
    if kind == 0:
        return f"photo-{index}.jpg", jpeg_bytes(400 + index, 300), True
    if kind == 1:
        return f"chart-{index}.png", png_bytes(200 + index, 150), True
    if kind == 2:
        return f"notes-{index}.txt", f"notes {index}\n".encode() * 100, False
    return f"data-{index}.csv", f"a,b\n{index},{index * 2}\n".encode(), False


async def upload(http: aiohttp.ClientSession, base: str, token: str, index: int, data: bytes, name: str):
    """One upload, in one of three forms (multipart, raw body, JSON base64); its record once committed."""
    auth = {"Authorization": f"Bearer {token}", "X-Request-ID": f"scale-{index}"}
    form = index % 3
    if form == 0:
        body = aiohttp.FormData()
        for key, value in (("target_type", "Task"), ("target_id", "scale")):
            body.add_field(key, value)
        body.add_field("file", data, filename=name)
        request = http.post(f"{base}/v1/attachments", data=body, headers=auth)
    elif form == 1:
        request = http.post(
            f"{base}/v1/attachments?target_type=Task&target_id=scale&filename={name}",
            data=data,
            headers={**auth, "Content-Type": "application/octet-stream"},
        )
    else:
        encoded = base64.b64encode(data).decode()
        payload = {"target_type": "Task", "target_id": "scale", "filename": name, "data": encoded}
        request = http.post(f"{base}/v1/attachments", json=payload, headers=auth)
    async with request as resp:
        assert resp.status in (201, 202), await resp.text()
        assert resp.headers["X-Request-ID"] == f"scale-{index}"
        answer = await resp.json()
    if resp.status == 202:  # the workers were busy for longer than the ingress waits: poll, as a client would
        deadline = time.monotonic() + 30
        while answer.get("status") != "complete":
            assert time.monotonic() < deadline and answer.get("status") != "failed", answer
            await asyncio.sleep(0.2)
            async with http.get(f"{base}/v1/uploads/{answer['id']}", headers=auth) as resp:
                answer = await resp.json()
        answer = answer["attachment"]
    return answer


async def test_two_ingresses_two_query_services_and_three_workers_share_nothing_but_the_engines(
    pg_url, redis_url, s3_endpoint, tmp_path: Path, db
):
    started = time.monotonic()
    flush = aioredis.from_url(redis_url)
    await flush.flushdb()  # no job left over from another test for these workers
    await flush.aclose()
    bucket = f"scale-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    common = {
        "ATTACHD_DATABASE_URL": pg_url,
        "ATTACHD_REDIS_URL": redis_url,
        "ATTACHD_STORAGE_URL": f"s3://{bucket}/attachd",
        "ATTACHD_S3_ENDPOINT_URL": s3_endpoint,
        "ATTACHD_JWT_SECRET": JWT_SECRET,
        "ATTACHD_HOST": "127.0.0.1",
        "ATTACHD_WORKER_CONCURRENCY": "4",
    }
    parts = [("ingress", free_port()) for _ in range(2)]
    parts += [("query", free_port()) for _ in range(2)]
    parts += [("worker", free_port()) for _ in range(3)]
    procs, log_files = [], []
    for part, port in parts:
        own = tmp_path / f"{part}-{port}"  # each its own local disk
        own.mkdir()
        proc, log_file = spawn_logged(part, port, {**common, "ATTACHD_TMP_DIR": str(own)}, tmp_path)
        procs.append(proc)
        log_files.append(log_file)
    ingresses = [f"http://127.0.0.1:{port}" for part, port in parts if part == "ingress"]
    queries = [f"http://127.0.0.1:{port}" for part, port in parts if part == "query"]
    account = f"scale-{uuid.uuid4().hex[:8]}"
    token = jwt.encode(
        {"account": account, "sub": "u1", "scope": "attachments:read attachments:write"}, JWT_SECRET, algorithm="HS256"
    )
    bodies = [upload_body(i) for i in range(UPLOADS)]
    try:
        await asyncio.gather(*(wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=45) for _, port in parts))
        async with aiohttp.ClientSession() as http:
            records = await asyncio.gather(
                *(upload(http, ingresses[i % 2], token, i, data, name) for i, (name, data, _) in enumerate(bodies))
            )
            ids = [record["id"] for record in records]
            assert len(set(ids)) == UPLOADS

            # Committed once each, images with both variants, an event each.
            rows = await db.fetch("SELECT * FROM attachments WHERE account_id = $1", account)
            assert sorted(str(row["id"]) for row in rows) == sorted(ids)
            by_id = {str(row["id"]): row for row in rows}
            for record, (name, data, image) in zip(records, bodies, strict=True):
                row = by_id[record["id"]]
                assert (row["filename"], bytes(row["sha256"]).hex()) == (name, hashlib.sha256(data).hexdigest())
                assert bool(row["variants"]) is image and (not image or {"thumbnail", "small"} <= set(row["variants"]))
            created = await db.fetch(
                "SELECT attachment_id FROM outbox WHERE account_id = $1 AND event_type = 'attachment.created'", account
            )
            assert sorted(str(r["attachment_id"]) for r in created) == sorted(ids)

            # The same from both query processes: the list, each record, the bytes and the thumbnails.
            auth = {"Authorization": f"Bearer {token}"}
            for query in queries:
                async with http.get(
                    f"{query}/v1/attachments?target_type=Task&target_id=scale&limit=100", headers=auth
                ) as resp:
                    assert resp.status == 200
                    assert sorted(a["id"] for a in (await resp.json())["attachments"]) == sorted(ids)

            async def read_back(query: str, ident: str, data: bytes, image: bool) -> None:
                async with http.get(f"{query}/v1/attachments/{ident}/file", headers=auth) as resp:
                    assert resp.status == 200 and await resp.read() == data
                if image:
                    async with http.get(f"{query}/v1/attachments/{ident}/file/thumbnail", headers=auth) as resp:
                        assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
                        assert len(await resp.read()) > 100

            await asyncio.gather(
                *(
                    read_back(query, ident, data, image)
                    for ident, (_, data, image) in zip(ids, bodies, strict=True)
                    for query in queries
                )
            )

            # Nothing staged is left once the workers have finished (they delete it after answering).
            deadline = time.monotonic() + 10
            while s3.list_objects_v2(Bucket=bucket, Prefix="attachd/staging/").get("KeyCount", 0):
                assert time.monotonic() < deadline, "staged bytes left behind"
                await asyncio.sleep(0.2)

            # Every metric the dashboard and the alerts name is exported by one of the parts.
            series: dict[str, set[str]] = {}
            for _, port in parts:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    for name, labels in exported(await resp.text()).items():
                        series.setdefault(name, set()).update(labels)
            named = {n for expr in dashboard_exprs() + [r["expr"] for r in alert_rules()] for n in METRIC.findall(expr)}
            assert named - set(series) == set()
    finally:
        codes = stop_all(procs)
    assert codes == [0] * len(procs)

    # Each upload was committed by exactly one worker, and its line there carries the upload's request id.
    committed: dict[str, list[str]] = {}
    for (part, port), log_file in zip(parts, log_files, strict=True):
        if part == "worker":
            for line in json_lines(log_file.read_text()):
                if line.get("logger") == "attachd.jobs" and line.get("result") == "committed":
                    committed.setdefault(line["request_id"], []).append(f"{part}-{port}")
    assert {rid: len(workers) for rid, workers in committed.items()} == {f"scale-{i}": 1 for i in range(UPLOADS)}
    assert time.monotonic() - started < 90
