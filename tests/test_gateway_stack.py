"""The production stack behind its gateway: the ingress, query, compat and worker parts as separate processes
on S3, reached through one reverse proxy on 127.0.0.1 that sends each request where the HTTPRoute in
deploy/k8s sends it (tests/test_deploy.py's ``route_to``). Through that one base URL, as users reach attachd:
the Python client (multipart and tus), tuspy, and two compat profiles; a path the route does not serve is
the gateway's 404."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import boto3
import jwt
import redis.asyncio as aioredis
from aiohttp import web
from tusclient import client as tus_client

from attachd_client import AsyncClient, Target
from services.embedded import free_port
from tests.conftest import JWT_SECRET, jpeg_bytes
from tests.test_cli import wait_ready
from tests.test_deploy import HTTPROUTE, route_to
from tests.test_operations import spawn_logged, stop_all

# Headers that belong to one hop, not to the request or answer a proxy passes on.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding"}
    | {"upgrade"}
)


@asynccontextmanager
async def gateway(backends: dict[str, str]) -> AsyncIterator[str]:
    """A streaming reverse proxy routing by the HTTPRoute's rules to ``backends`` (Service name -> URL)."""
    session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=120))

    async def forward(request: web.Request) -> web.StreamResponse:
        service = route_to(HTTPROUTE, request.method, request.path)
        if service is None:
            return web.Response(status=404, text="no route")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with session.request(
            request.method,
            backends[service] + request.raw_path,
            headers=headers,
            data=request.content if request.body_exists else None,
            allow_redirects=False,
        ) as upstream:
            answer = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            await answer.prepare(request)
            async for chunk in upstream.content.iter_chunked(1 << 16):
                await answer.write(chunk)
            await answer.write_eof()
            return answer

    app = web.Application(client_max_size=1 << 40)
    app.router.add_route("*", "/{path:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()


@asynccontextmanager
async def separate_parts(
    parts: tuple[str, ...],
    *,
    pg_url: str,
    redis_url: str,
    s3_endpoint: str,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    part_env: dict[str, dict[str, str]] | None = None,
) -> AsyncIterator[str]:
    """``parts`` as processes of their own on the test Postgres and Redis and a new S3 bucket, each with its
    own local disk, behind ``gateway``: yields the gateway's base URL. Each part must exit 0 once stopped."""
    flush = aioredis.from_url(redis_url)
    await flush.flushdb()  # no job left over from another test for these workers
    await flush.aclose()
    bucket = f"parts-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    common = {
        "ATTACHD_DATABASE_URL": pg_url,
        "ATTACHD_REDIS_URL": redis_url,
        "ATTACHD_STORAGE_URL": f"s3://{bucket}/attachd",
        "ATTACHD_S3_ENDPOINT_URL": s3_endpoint,
        "ATTACHD_JWT_SECRET": JWT_SECRET,
        "ATTACHD_HOST": "127.0.0.1",
        **(env or {}),
    }
    ports = {part: free_port() for part in parts}
    procs = []
    try:
        for part, port in ports.items():
            own = tmp_path / part
            own.mkdir()
            extra = {"ATTACHD_TMP_DIR": str(own), **(part_env or {}).get(part, {})}
            procs.append(spawn_logged(part, port, {**common, **extra}, tmp_path)[0])
        await asyncio.gather(*(wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=45) for port in ports.values()))
        backends = {f"attachd-{part}": f"http://127.0.0.1:{port}" for part, port in ports.items() if part != "worker"}
        async with gateway(backends) as base:
            yield base
    finally:
        codes = stop_all(procs)
    assert codes == [0] * len(procs)


async def test_every_client_works_through_the_gateway_in_front_of_the_separate_parts(
    pg_url, redis_url, s3_endpoint, tmp_path: Path, db
):
    account = f"gw-{uuid.uuid4().hex[:8]}"
    token = jwt.encode(
        {"account": account, "sub": "7", "scope": "attachments:read attachments:write"}, JWT_SECRET, algorithm="HS256"
    )
    task = Target("Task", "gw")
    small, large = tmp_path / "door.jpg", tmp_path / "survey.bin.txt"
    small.write_bytes(jpeg_bytes(640, 480))
    large.write_bytes(b"survey line\n" * (1 << 20))  # 12 MiB: over tus, in 5 MiB chunks
    async with separate_parts(
        ("ingress", "query", "compat", "worker"),
        pg_url=pg_url,
        redis_url=redis_url,
        s3_endpoint=s3_endpoint,
        tmp_path=tmp_path,
        env={"ATTACHD_TUS_PART_BYTES": str(5 << 20)},
    ) as base:
        # The Python client: multipart under its threshold, tus above it; reads and the bytes back.
        async with AsyncClient(base, token, tus_threshold=1 << 20, chunk_size=5 << 20) as attachd:
            photo = await attachd.upload(small, task, name="Front door")
            survey = await attachd.upload(large, task)
            assert (photo.width, photo.height, survey.size) == (640, 480, large.stat().st_size)
            assert sorted(a.id for a in [x async for x in attachd.list(task)]) == sorted([photo.id, survey.id])
            await attachd.download(survey.id, tmp_path / "back.txt")
            assert (tmp_path / "back.txt").read_bytes() == large.read_bytes()
            thumbnail = b"".join([c async for c in attachd.iter_file(photo.id, "thumbnail")])
            assert thumbnail[:3] == b"\xff\xd8\xff"

        # tuspy, a tus client written by others, over the same gateway.
        uploader = tus_client.TusClient(
            f"{base}/v1/uploads/tus", headers={"Authorization": f"Bearer {token}"}
        ).uploader(
            file_path=str(large),
            chunk_size=5 << 20,
            metadata={"target_type": "Task", "target_id": "gw", "filename": "copy.txt"},
        )
        await asyncio.to_thread(uploader.upload)
        assert uploader.url is not None and uploader.url.startswith(base)
        upload_id = uploader.url.rsplit("/", 1)[1]

        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {token}"}
            for _ in range(150):
                async with http.get(f"{base}/v1/uploads/{upload_id}", headers=auth) as resp:
                    status = await resp.json()
                if status["status"] in ("complete", "failed"):
                    break
                await asyncio.sleep(0.2)
            assert status["status"] == "complete", status
            assert status["attachment"]["sha256"] == hashlib.sha256(large.read_bytes()).hexdigest()

            # Autotask: create through a ticket's child collection, then find it with AttachmentInfo.
            root = f"{base}/compat/autotask/atservicesrest/v1.0"
            autotask = {"ApiIntegrationCode": "GW", "UserName": "api@example.com", "Secret": token}
            body = {
                "id": 0,
                "title": "notes.txt",
                "fullPath": "notes.txt",
                "attachmentType": "FILE_ATTACHMENT",
                "publish": 1,
                "data": base64.b64encode(b"through the gateway").decode(),
            }
            async with http.post(f"{root}/Tickets/77/Attachments", json=body, headers=autotask) as resp:
                assert resp.status == 200, await resp.text()
                item_id = (await resp.json())["itemId"]
            query = {"filter": [{"op": "eq", "field": "ticketID", "value": 77}]}
            async with http.post(f"{root}/AttachmentInfo/query", json=query, headers=autotask) as resp:
                assert resp.status == 200, await resp.text()
                assert [i["id"] for i in (await resp.json())["items"]] == [item_id]

            # EspoCRM: the upload, then its bytes.
            espo = {"X-Api-Key": token}
            upload = {
                "name": "espo.txt",
                "type": "text/plain",
                "role": "Attachment",
                "parentType": "Note",
                "field": "attachments",
                "file": "data:text/plain;base64," + base64.b64encode(b"espo bytes").decode(),
            }
            async with http.post(f"{base}/compat/espocrm/api/v1/Attachment", json=upload, headers=espo) as resp:
                assert resp.status == 200, await resp.text()
                espo_id = (await resp.json())["id"]
            async with http.get(f"{base}/compat/espocrm/api/v1/Attachment/file/{espo_id}", headers=espo) as resp:
                assert resp.status == 200 and await resp.read() == b"espo bytes"

            # What no rule routes is the gateway's, whichever part would serve it.
            for path in ("/metrics", "/healthz", "/v2/attachments"):
                async with http.get(f"{base}{path}") as resp:
                    assert (resp.status, await resp.text()) == (404, "no route")
    rows = await db.fetch("SELECT name, target_type, target_id FROM attachments WHERE account_id = $1", account)
    assert len(rows) == 5
