"""Resumable uploads over tus 1.0, driven by tuspy (a tus client someone else wrote) on both storage backends.

tuspy's uploader is synchronous (requests), so it runs in a thread beside the test server's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import orjson
import pytest
import redis.asyncio as aioredis
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed
from tusclient.uploader import Uploader

from services.core import tus
from services.core.auth import READ, WRITE, mint_token
from services.core.errors import ApiError
from services.core.jobs import connect
from services.core.storage import open_storage
from services.core.tus_uploads import TusUploads
from services.embedded import free_port
from tests.conftest import JWT_SECRET, Service, jpeg_bytes
from tests.test_cli import part_env, wait_ready
from tests.test_operations import spawn_logged, stop_all
from tests.test_runner import sweep

TUS = "/v1/uploads/tus"
MiB = 1 << 20


class Sha256Uploader(Uploader):
    """tuspy's uploader, its checksums sha256 (it sends sha1 by default)."""

    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


def tus_url(svc: Service) -> str:
    return str(svc.client.make_url(TUS))


def uploader(svc: Service, path: Path, metadata: dict[str, str], *, token: str | None = None, **kw: Any) -> Uploader:
    client = tus_client.TusClient(tus_url(svc), headers={"Authorization": f"Bearer {token or svc.token()}"})
    kind = kw.pop("kind", Uploader)
    return kind(file_path=str(path), client=client, metadata=metadata, **kw)


async def upload_with_tuspy(svc: Service, path: Path, metadata: dict[str, str], **kw: Any) -> str:
    """Upload ``path`` from start to end; the upload's id (the last part of its URL)."""
    up = uploader(svc, path, metadata, **kw)
    await asyncio.to_thread(up.upload)
    assert up.url is not None
    return up.url.rsplit("/", 1)[1]


def task_metadata(filename: str, target_id: str = "42", **more: str) -> dict[str, str]:
    return {"target_type": "Task", "target_id": target_id, "filename": filename, **more}


async def committed(svc: Service, upload_id: str) -> dict[str, Any]:
    status = await svc.finished_upload(f"/v1/uploads/{upload_id}", timeout=30)
    assert status["status"] == "complete", status
    return status["attachment"]


async def stored_bytes(svc: Service, key: str) -> bytes:
    return b"".join([chunk async for chunk in svc.storage.read(key)])


def tus_headers(svc: Service, **more: str) -> dict[str, str]:
    return {**svc.auth(), "Tus-Resumable": "1.0.0", **more}


# The protocol's rules (services/core/tus.py), called directly.


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_metadata_is_key_base64_pairs_and_a_key_alone_is_the_empty_value():
    header = f"filename {b64('Résumé 2024.pdf')}, target_id {b64('42')},is_confidential"
    assert tus.parse_metadata(header) == {"filename": "Résumé 2024.pdf", "target_id": "42", "is_confidential": ""}
    assert tus.parse_metadata(None) == tus.parse_metadata(" ") == {}
    assert tus.parse_metadata(tus.encode_metadata({"a": "1", "b": ""})) == {"a": "1", "b": ""}


@pytest.mark.parametrize(
    ("header", "field"),
    [
        (f"name {b64('a')},name {b64('b')}", "Upload-Metadata"),  # a key twice
        ("name not*base64", "name"),
        (f"name {base64.b64encode(bytes([0xFF, 0xFE])).decode()}", "name"),  # not UTF-8
        (f"name {b64('a')} extra", "Upload-Metadata"),
        (",", "Upload-Metadata"),
    ],
)
def test_malformed_metadata_is_a_400_naming_what_is_wrong(header, field):
    with pytest.raises(ApiError) as refused:
        tus.parse_metadata(header)
    assert (refused.value.status, refused.value.field) == (400, field)
    assert refused.value.headers["Tus-Resumable"] == "1.0.0"


def test_metadata_carries_the_native_create_fields_and_other_clients_names_for_them():
    new = tus.new_attachment(
        {"target_type": "Task", "target_id": "7", "filename": "a.png", "filetype": "image/png", "relativePath": "x/a"}
    )
    assert (new.target_type, new.target_id, new.filename, new.content_type) == ("Task", "7", "a.png", "image/png")
    assert tus.create_fields({"content_type": "text/plain", "type": "image/png"}) == {"content_type": "text/plain"}
    assert tus.new_attachment({"target_type": "Task", "target_id": "7", "display_order": "5"}).display_order == 5
    with pytest.raises(ApiError) as refused:
        tus.new_attachment({"target_type": "Task", "target_id": "7", "available": "perhaps"})
    assert (refused.value.code, refused.value.field) == ("invalid_type", "available")


def test_lengths_offsets_and_checksums():
    assert tus.parse_length("0") == 0 and tus.parse_offset("1048576") == 1 << 20
    for bad in ("-1", "1.5", "", "0x10", "99999999999999999999"):
        with pytest.raises(ApiError):
            tus.parse_length(bad)
    with pytest.raises(ApiError) as missing:
        tus.parse_length(None)
    assert missing.value.field == "Upload-Length"
    digest = hashlib.sha256(b"abc").digest()
    checksum = tus.parse_checksum("sha256 " + base64.b64encode(digest).decode())
    assert checksum is not None and checksum.algorithm == "sha256" and checksum.digest == digest
    assert tus.parse_checksum(None) is None
    for bad in ("crc32 AAAA", "sha256 AAAA", "sha256", "md5 not*base64"):
        with pytest.raises(ApiError) as refused:
            tus.parse_checksum(bad)
        assert (refused.value.status, refused.value.field) == (400, "Upload-Checksum")


def test_only_tus_1_0_0_is_spoken():
    tus.check_resumable("1.0.0")
    for other in (None, "0.2.2", "1.0"):
        with pytest.raises(ApiError) as refused:
            tus.check_resumable(other)
        assert refused.value.status == 412 and refused.value.headers["Tus-Version"] == "1.0.0"


def test_s3_parts_are_5_mib_until_a_file_needs_more_than_10000_of_them():
    assert tus.part_size(1, 5 * MiB) == tus.part_size(50_000 * MiB, 5 * MiB) == 5 * MiB
    assert tus.part_size(100_000 * MiB, 5 * MiB) == 10 * MiB
    assert tus.part_size(100_000 * MiB + 1, 5 * MiB) * 10_000 >= 100_000 * MiB + 1
    assert tus.http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


# Through the HTTP API, with tuspy.


async def test_a_small_upload_becomes_an_attachment_with_its_thumbnails(any_backend_service, tmp_path):
    svc = any_backend_service
    data = jpeg_bytes(900, 600)
    path = tmp_path / "site.jpg"
    path.write_bytes(data)
    upload_id = await upload_with_tuspy(svc, path, task_metadata("site.jpg", name="Site visit", display_order="3"))

    record = await committed(svc, upload_id)
    assert record["id"] == upload_id
    assert (record["name"], record["filename"], record["display_order"]) == ("Site visit", "site.jpg", 3)
    assert (record["content_type"], record["size"], record["width"]) == ("image/jpeg", len(data), 900)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    [row] = await svc.rows()
    assert str(row["id"]) == upload_id and bytes(row["sha256"]) == hashlib.sha256(data).digest()
    assert await stored_bytes(svc, row["storage_key"]) == data
    assert set(row["variants"]) == {"thumbnail", "small"}
    [event] = await svc.events()
    assert event["event_type"] == "attachment.created"


async def test_a_multi_chunk_upload_is_stored_as_it_arrives_and_committed_whole(any_backend_service, tmp_path):
    svc = any_backend_service
    # 2 MiB chunks against 5 MiB parts: on S3 most PATCHes end in a tail object, and parts span chunks.
    data = b"".join(b"line %08d of a long report\n" % i for i in range(300_000))  # 9.3 MB (the default budget: 10)
    path = tmp_path / "report.txt"
    path.write_bytes(data)
    up = uploader(svc, path, task_metadata("report.txt", "multi"), chunk_size=2 * MiB)
    up.set_url(await asyncio.to_thread(up.create_url))
    offsets = []
    while up.offset < len(data):
        await asyncio.to_thread(up.upload_chunk)
        offsets.append(up.offset)
        if up.offset < len(data):  # what a HEAD says between chunks: every byte sent so far is kept
            assert await asyncio.to_thread(up.get_offset) == up.offset
            # S3: the bytes after the last part are in one tail object; the ones it replaced are gone.
            assert len([o async for o in svc.storage.list("staging/") if ".tail-" in o.key]) <= 1
    assert offsets == [min(len(data), n * 2 * MiB) for n in range(1, len(offsets) + 1)] and len(offsets) == 5

    upload_id = up.url.rsplit("/", 1)[1]
    record = await committed(svc, upload_id)
    assert (record["size"], record["content_type"]) == (len(data), "text/plain")
    [row] = await svc.rows()
    assert bytes(row["sha256"]) == hashlib.sha256(data).digest()
    assert hashlib.sha256(await stored_bytes(svc, row["storage_key"])).digest() == hashlib.sha256(data).digest()
    assert [k for k in await svc.settled_keys(timeout=10) if k.startswith("staging/")] == []


async def test_sha256_checksums_are_checked_and_a_mismatch_drops_the_chunk(any_backend_service, tmp_path):
    svc = any_backend_service
    data = base64.b64encode(os.urandom(60_000)) + b"\n"
    path = tmp_path / "sums.txt"
    path.write_bytes(data)
    # tuspy with sha256 Upload-Checksums, in two chunks.
    upload_id = await upload_with_tuspy(
        svc, path, task_metadata("sums.txt", "sums"), kind=Sha256Uploader, upload_checksum=True, chunk_size=50_000
    )
    assert (await committed(svc, upload_id))["sha256"] == hashlib.sha256(data).hexdigest()

    # A chunk whose checksum does not match is a 460, and the offset does not move.
    url = await create_upload(svc, length=10, metadata=task_metadata("ten.txt", "sums"))
    wrong = "sha256 " + base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    async with svc.client.patch(
        url, data=b"0123456789", headers=patch_headers(svc, 0, **{"Upload-Checksum": wrong})
    ) as r:
        assert r.status == 460 and r.headers["Tus-Resumable"] == "1.0.0"
        assert (await r.json())["error"]["code"] == "checksum_mismatch"
    assert await offset_of(svc, url) == 0
    good = "sha256 " + base64.b64encode(hashlib.sha256(b"0123456789").digest()).decode()
    async with svc.client.patch(
        url, data=b"0123456789", headers=patch_headers(svc, 0, **{"Upload-Checksum": good})
    ) as r:
        assert r.status == 204 and r.headers["Upload-Offset"] == "10"
    record = await committed(svc, url.rsplit("/", 1)[1])
    [row] = [r for r in await svc.rows() if str(r["id"]) == record["id"]]
    assert await stored_bytes(svc, row["storage_key"]) == b"0123456789"

    # An algorithm it does not speak is a 400.
    url = await create_upload(svc, length=3, metadata=task_metadata("abc.txt", "sums"))
    async with svc.client.patch(
        url, data=b"abc", headers=patch_headers(svc, 0, **{"Upload-Checksum": "crc32 AAAA"})
    ) as r:
        assert r.status == 400 and (await r.json())["error"]["field"] == "Upload-Checksum"


def patch_headers(svc: Service, offset: int, **more: str) -> dict[str, str]:
    return tus_headers(svc, **{"Upload-Offset": str(offset), "Content-Type": tus.OFFSET_CONTENT_TYPE, **more})


async def create_upload(svc: Service, *, length: int, metadata: dict[str, str], **headers: str) -> str:
    """A new upload's path (POST, no bytes)."""
    encoded = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())
    async with svc.client.post(
        TUS, headers=tus_headers(svc, **{"Upload-Length": str(length), "Upload-Metadata": encoded, **headers})
    ) as r:
        assert r.status == 201, await r.text()
        return str(aiohttp.client.URL(r.headers["Location"]).path)


async def offset_of(svc: Service, url: str) -> int:
    async with svc.client.head(url, headers=tus_headers(svc)) as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        return int(r.headers["Upload-Offset"])


async def test_a_patch_at_another_offset_is_a_409_and_changes_nothing(any_backend_service):
    svc = any_backend_service
    url = await create_upload(svc, length=8, metadata=task_metadata("eight.txt", "conflict"))
    async with svc.client.patch(url, data=b"abcd", headers=patch_headers(svc, 0)) as r:
        assert r.status == 204 and r.headers["Upload-Offset"] == "4"
    for stale in (0, 6):
        async with svc.client.patch(url, data=b"efgh", headers=patch_headers(svc, stale)) as r:
            assert r.status == 409 and r.headers["Upload-Offset"] == "4"
            assert (await r.json())["error"] == {
                "code": "offset_mismatch",
                "message": "Upload-Offset must be the upload's offset, 4 (HEAD the upload for it)",
                "field": "Upload-Offset",
            }
    assert await offset_of(svc, url) == 4
    async with svc.client.patch(url, data=b"efghi", headers=patch_headers(svc, 4)) as r:  # past the length
        assert r.status == 413
    async with svc.client.patch(url, data=b"efgh", headers=patch_headers(svc, 4)) as r:
        assert r.status == 204 and r.headers["Upload-Offset"] == "8"
    record = await committed(svc, url.rsplit("/", 1)[1])
    assert record["size"] == 8
    async with svc.client.patch(url, data=b"", headers=patch_headers(svc, 8)) as r:  # finished: nothing more
        assert r.status == 409


async def test_termination_deletes_the_bytes_and_aborts_the_s3_multipart_upload(any_backend_service, s3_endpoint):
    svc = any_backend_service
    url = await create_upload(svc, length=9 * MiB, metadata=task_metadata("big.txt", "gone"))
    async with svc.client.patch(url, data=b"x" * (6 * MiB), headers=patch_headers(svc, 0)) as r:
        assert r.status == 204
    assert [o.key async for o in svc.storage.list("staging/")] != []
    s3 = None
    if svc.storage.local_path("") is None:  # S3: one part uploaded, a tail object for the rest
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        bucket = svc.settings.storage_url.split("/")[2]
        assert len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1

    async with svc.client.delete(url, headers=tus_headers(svc)) as r:
        assert r.status == 204 and r.headers["Tus-Resumable"] == "1.0.0"
    assert [o.key async for o in svc.storage.list("staging/")] == []
    if s3 is not None:
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    async with svc.client.head(url, headers=tus_headers(svc)) as r:
        assert r.status == 404
    async with svc.client.patch(url, data=b"x", headers=patch_headers(svc, 6 * MiB)) as r:
        assert r.status == 404
    assert await svc.rows() == []


async def test_an_expired_upload_is_gone_and_the_sweeper_takes_its_bytes(make_service, s3_endpoint):
    expiry_s = 4  # long enough for the sweep below to come while it is live, on a busy machine too
    async with make_service(backend="s3", s3_endpoint=s3_endpoint, tus_expiry_s=expiry_s) as svc:
        url = await create_upload(svc, length=9 * MiB, metadata=task_metadata("slow.txt", "late"))
        async with svc.client.patch(url, data=b"y" * (6 * MiB), headers=patch_headers(svc, 0)) as r:
            assert r.status == 204
            expires = r.headers["Upload-Expires"]
        expired_at = time.monotonic() + expiry_s
        assert expires.endswith(" GMT")
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        bucket = svc.settings.storage_url.split("/")[2]
        # A sweep while it is live leaves its multipart upload alone (moto dates every one 2010: "old").
        assert (await sweep(svc))["expired"] == 0
        assert len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
        await asyncio.sleep(expired_at + 0.2 - time.monotonic())
        async with svc.client.patch(url, data=b"y", headers=patch_headers(svc, 6 * MiB)) as r:
            assert r.status == 410 and (await r.json())["error"]["code"] == "upload_expired"

        assert (await sweep(svc))["expired"] == 1
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert [o.key async for o in svc.storage.list("staging/")] == []
        async with svc.client.head(url, headers=tus_headers(svc)) as r:
            assert r.status == 404


async def test_bad_metadata_is_refused_at_creation_naming_the_field_and_nothing_is_kept(service, tmp_path):
    svc = service
    path = tmp_path / "x.txt"
    path.write_bytes(b"hello\n")
    cases = [
        (task_metadata("x.txt", display_order="first"), "display_order", "invalid_type"),
        (task_metadata("x.txt", colour="red"), "colour", "unknown_field"),
        ({"filename": "x.txt"}, "target_type", "missing_field"),
        (task_metadata("x.txt", url="https://example.com/x"), "url", "too_many_sources"),
        (task_metadata("x.exe"), "filename", "invalid_extension"),  # never allowed: no byte need be sent
    ]
    for metadata, field, code in cases:
        up = uploader(svc, path, metadata)
        with pytest.raises(TusCommunicationError) as refused:
            await asyncio.to_thread(up.upload)
        assert refused.value.status_code == 400
        error = orjson.loads(refused.value.response_content)["error"]
        assert (error["field"], error["code"]) == (field, code)
    async with svc.client.post(
        TUS, headers=tus_headers(svc, **{"Upload-Length": "1", "Upload-Metadata": "name %%%"})
    ) as r:
        assert r.status == 400 and (await r.json())["error"]["field"] == "name"
    redis = await connect(svc.settings.redis_url)
    try:
        assert await redis.zcard("attachd:tus:expiring") == 0
    finally:
        await redis.aclose()
    assert await svc.stored_keys() == []


async def test_the_token_rules_of_every_route_apply(service, tmp_path):
    svc = service
    path = tmp_path / "x.txt"
    path.write_bytes(b"hello\n")
    for token, status in (("not-a-token", 401), (svc.token(scope="attachments:read"), 403)):
        with pytest.raises(TusCommunicationError) as refused:
            await asyncio.to_thread(uploader(svc, path, task_metadata("x.txt"), token=token).upload)
        assert refused.value.status_code == status
    async with svc.client.post(TUS, headers={"Tus-Resumable": "1.0.0", "Upload-Length": "1"}) as r:
        assert r.status == 401 and r.headers["Tus-Resumable"] == "1.0.0"

    url = await create_upload(svc, length=6, metadata=task_metadata("x.txt"))
    other = {**tus_headers(svc), **svc.auth(svc.other_account())}
    async with svc.client.head(url, headers=other) as r:  # another account's upload does not exist
        assert r.status == 404
    async with svc.client.patch(url, data=b"hello\n", headers={**patch_headers(svc, 0), **other}) as r:
        assert r.status == 404
    async with svc.client.delete(url, headers=other) as r:
        assert r.status == 404
    assert await offset_of(svc, url) == 0


async def test_discovery_versions_and_limits(make_service):
    async with make_service(max_file_bytes=1000) as svc:
        async with svc.client.options(TUS) as r:
            assert r.status == 204
            assert r.headers["Tus-Resumable"] == r.headers["Tus-Version"] == "1.0.0"
            assert r.headers["Tus-Extension"] == "creation,creation-with-upload,termination,expiration,checksum"
            assert r.headers["Tus-Checksum-Algorithm"] == "sha256,sha1,md5"
            assert r.headers["Tus-Max-Size"] == "1000"
        async with svc.client.post(TUS, headers={**svc.auth(), "Upload-Length": "10"}) as r:  # no Tus-Resumable
            assert r.status == 412 and r.headers["Tus-Version"] == "1.0.0"
        too_big = tus_headers(
            svc, **{"Upload-Length": "1001", "Upload-Metadata": "target_type VGFzaw==,target_id NDI="}
        )
        async with svc.client.post(TUS, headers=too_big) as r:
            assert r.status == 413 and (await r.json())["error"]["field"] == "Upload-Length"
        no_length = tus_headers(svc, **{"Upload-Metadata": "target_type VGFzaw==,target_id NDI="})
        async with svc.client.post(TUS, headers=no_length) as r:  # deferring the length is not offered
            assert r.status == 400 and (await r.json())["error"]["field"] == "Upload-Length"
        assert await svc.stored_keys() == []


async def test_creation_with_upload_takes_the_first_bytes_in_the_post(service):
    svc = service
    metadata = "target_type VGFzaw==,target_id NDI=,filename " + base64.b64encode(b"note.txt").decode()
    headers = tus_headers(
        svc, **{"Upload-Length": "11", "Upload-Metadata": metadata, "Content-Type": tus.OFFSET_CONTENT_TYPE}
    )
    async with svc.client.post(TUS, data=b"hello", headers=headers) as r:
        assert r.status == 201 and r.headers["Upload-Offset"] == "5" and "Upload-Expires" in r.headers
        url = str(aiohttp.client.URL(r.headers["Location"]).path)
    async with svc.client.head(url, headers=tus_headers(svc)) as r:
        assert (r.headers["Upload-Length"], r.headers["Upload-Metadata"]) == ("11", metadata)
    async with svc.client.patch(url, data=b" world", headers=patch_headers(svc, 5)) as r:
        assert r.status == 204 and r.headers["Upload-Offset"] == "11"
    upload_id = url.rsplit("/", 1)[1]
    record = await committed(svc, upload_id)
    assert (record["filename"], record["size"]) == ("note.txt", 11)
    # The upload's status is the native one, under the same id.
    async with svc.client.get(f"/v1/uploads/{upload_id}", headers=svc.auth()) as r:
        assert (await r.json())["status"] == "complete"


# The key test: a connection cut in the middle of a 64 MiB upload, which another ingress process resumes.


async def throttled_proxy(target_port: int, bytes_per_s: float) -> asyncio.Server:
    """A TCP proxy to 127.0.0.1:``target_port`` that passes the client's bytes on at ``bytes_per_s`` (so an
    upload is still under way when the test cuts it); when either side closes, so does the other."""

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, throttled: bool) -> None:
        try:
            while data := await src.read(256 * 1024):
                dst.write(data)
                await dst.drain()
                if throttled:
                    await asyncio.sleep(len(data) / bytes_per_s)
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer, True), pipe(upstream_reader, writer, False))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("backend", ["file", "s3"])
async def test_an_upload_cut_mid_patch_resumes_from_another_ingress_process(
    backend, pg_url, redis_url, s3_endpoint, tmp_path, db
):
    flush = aioredis.from_url(redis_url)
    await flush.flushdb()  # no job left over from another test for this worker
    await flush.aclose()
    extra = {"ATTACHD_MAX_FILE_BYTES": str(128 * MiB), "ATTACHD_BYTE_BUDGET": "0", "ATTACHD_LOG_FORMAT": "text"}
    if backend == "s3":
        bucket = f"tus-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        extra |= {"ATTACHD_STORAGE_URL": f"s3://{bucket}/attachd", "ATTACHD_S3_ENDPOINT_URL": s3_endpoint}
    env = part_env(pg_url, redis_url, tmp_path, **extra)
    parts = [("ingress", free_port()), ("ingress", free_port()), ("worker", free_port())]
    procs = [spawn_logged(part, port, env, tmp_path)[0] for part, port in parts]
    first, (_, first_port), (_, second_port) = procs[0], parts[0], parts[1]
    second_url = f"http://127.0.0.1:{second_port}"
    account = f"tus-{uuid.uuid4().hex[:8]}"
    token = mint_token(JWT_SECRET, account=account, sub="u1", sub_type="User", scope=f"{READ} {WRITE}")
    auth = {"Authorization": f"Bearer {token}"}
    data = base64.b64encode(os.urandom(48 * MiB))  # 64 MiB
    path = tmp_path / "big.txt"
    path.write_bytes(data)
    proxy = await throttled_proxy(first_port, 16 * MiB)  # 3 s at least from the cut point (16 MiB) to the end
    try:
        await asyncio.gather(*(wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=60) for _, port in parts))
        proxy_port = proxy.sockets[0].getsockname()[1]
        client = tus_client.TusClient(f"http://127.0.0.1:{proxy_port}{TUS}", headers=auth)
        first_try = client.uploader(file_path=str(path), metadata=task_metadata("big.txt", "resume"))
        first_try.set_url(await asyncio.to_thread(first_try.create_url))
        upload_path = aiohttp.client.URL(first_try.url).path
        sending = asyncio.create_task(asyncio.to_thread(first_try.upload))  # one 64 MiB PATCH

        # Once the other process reports part of it stored, the first ingress dies mid-PATCH.
        async with aiohttp.ClientSession() as http:
            stored = 0
            while stored < 16 * MiB:
                assert not sending.done(), "the upload finished before it could be cut"
                async with http.head(second_url + upload_path, headers={**auth, "Tus-Resumable": "1.0.0"}) as r:
                    stored = int(r.headers["Upload-Offset"])
                await asyncio.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        with pytest.raises(TusUploadFailed):
            await sending

        # Another process, another client: it asks for the offset and sends the rest.
        resumed = tus_client.TusClient(second_url + TUS, headers=auth).uploader(
            file_path=str(path), url=second_url + upload_path, retries=20, retry_delay=1
        )
        assert 16 * MiB <= resumed.offset < len(data)
        await asyncio.to_thread(resumed.upload)
        async with aiohttp.ClientSession() as http:
            upload_id = upload_path.rsplit("/", 1)[1]
            deadline = time.monotonic() + 60
            while True:
                async with http.get(f"{second_url}/v1/uploads/{upload_id}", headers=auth) as r:
                    status = await r.json()
                if status["status"] in ("complete", "failed") or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        assert status["status"] == "complete", status
        assert status["attachment"]["sha256"] == hashlib.sha256(data).hexdigest()
        row = await db.fetchrow("SELECT * FROM attachments WHERE account_id = $1", account)
        assert (str(row["id"]), row["size"]) == (upload_id, len(data))
        assert bytes(row["sha256"]) == hashlib.sha256(data).digest()
        store = await open_storage(env["ATTACHD_STORAGE_URL"], s3_endpoint_url=env.get("ATTACHD_S3_ENDPOINT_URL"))
        try:
            digest = hashlib.sha256()
            async for chunk in store.read(row["storage_key"]):
                digest.update(chunk)
            assert digest.digest() == hashlib.sha256(data).digest()
        finally:
            await store.close()
    finally:
        proxy.close()
        codes = stop_all(procs)
    assert codes[1:] == [0, 0]


async def test_a_retried_creation_with_an_idempotency_key_answers_with_the_same_upload(service):
    svc = service
    key = {"Idempotency-Key": "create-once"}
    first = await create_upload(svc, length=5, metadata=task_metadata("once.txt"), **key)
    async with svc.client.patch(first, data=b"ab", headers=patch_headers(svc, 0)) as r:
        assert r.status == 204
    again = await create_upload(svc, length=5, metadata=task_metadata("once.txt"), **key)
    assert again == first
    assert await offset_of(svc, again) == 2
    other = await create_upload(svc, length=5, metadata=task_metadata("once.txt"), **{"Idempotency-Key": "another"})
    assert other != first


async def test_one_request_writes_an_upload_at_a_time_and_a_finished_upload_is_the_attachments(service):
    svc = service
    url = await create_upload(svc, length=4, metadata=task_metadata("busy.txt"))
    upload_id = url.rsplit("/", 1)[1]
    redis = await connect(svc.settings.redis_url)
    try:
        async with TusUploads(redis).locked(upload_id):  # as a PATCH in flight on another process holds it
            async with svc.client.patch(url, data=b"abcd", headers=patch_headers(svc, 0)) as r:
                assert r.status == 423 and r.headers["Retry-After"] == "1"
                assert (await r.json())["error"]["code"] == "upload_locked"
    finally:
        await redis.aclose()
    async with svc.client.patch(url, data=b"abcd", headers=patch_headers(svc, 0)) as r:
        assert r.status == 204 and r.headers["Upload-Offset"] == "4" and "Upload-Expires" not in r.headers
    record = await committed(svc, upload_id)
    async with svc.client.head(url, headers=tus_headers(svc)) as r:  # still answers, finished
        assert (r.status, r.headers["Upload-Offset"], r.headers["Upload-Length"]) == (200, "4", "4")
    async with svc.client.delete(url, headers=tus_headers(svc)) as r:
        assert r.status == 409 and (await r.json())["error"]["code"] == "upload_complete"
    assert [str(row["id"]) for row in await svc.rows()] == [record["id"]]


async def test_an_upload_whose_last_patch_died_before_its_job_was_queued_is_finished_by_the_next_head(service):
    svc = service
    url = await create_upload(svc, length=6, metadata=task_metadata("late.txt"))
    upload_id = url.rsplit("/", 1)[1]
    redis = await connect(svc.settings.redis_url)
    try:  # what a process killed between storing the last byte and queueing the job leaves
        uploads = TusUploads(redis)
        async with uploads.locked(upload_id) as token:
            upload = await uploads.get(upload_id)
            assert upload is not None

            async def last_bytes():
                yield b"hello\n"

            upload.write = await svc.storage.append(upload.write, last_bytes())
            await uploads.save(upload, token)
    finally:
        await redis.aclose()
    assert (await svc.client.get(f"/v1/uploads/{upload_id}", headers=svc.auth())).status == 404  # no job yet
    assert await offset_of(svc, url) == 6
    record = await committed(svc, upload_id)
    assert (record["filename"], record["size"]) == ("late.txt", 6)


async def test_the_accounts_byte_budget_is_charged_the_whole_length_at_creation(make_service):
    async with make_service(byte_budget=1000, byte_budget_lockout_s=0) as svc:
        metadata = task_metadata("b.txt")
        await create_upload(svc, length=600, metadata=metadata)
        encoded = ",".join(f"{k} {b64(v)}" for k, v in metadata.items())
        for length, status in (("2000", 413), ("600", 429)):  # more than the whole budget; past what is left
            headers = tus_headers(svc, **{"Upload-Length": length, "Upload-Metadata": encoded})
            async with svc.client.post(TUS, headers=headers) as r:
                assert r.status == status and r.headers["Tus-Resumable"] == "1.0.0"
                assert (await r.json())["error"]["code"] == "byte_budget_exceeded"
        assert await svc.stored_keys() == []
