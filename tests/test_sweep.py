"""Nothing leaks: unfinished writes of killed processes and re-run copies leave no temp names behind."""

from __future__ import annotations

import os
import time
import uuid

import boto3

from services.core.storage import open_storage
from tests.test_runner import sweep
from workers.context import WorkerContext
from workers.sweep import sweep_object_partials


async def test_copying_an_object_again_leaves_no_temp_name(tmp_path):
    store = await open_storage(f"file://{tmp_path}")
    await store.put_bytes("staging/u/0", b"bytes")
    for _ in range(2):  # a re-run copies over its own earlier copy: the same file twice
        await store.copy("staging/u/0", "objects/a/x/original")
    assert os.listdir(tmp_path / "objects/a/x") == ["original"]
    assert await store.get_bytes("objects/a/x/original") == b"bytes"


async def test_the_sweeper_removes_writes_a_killed_process_left(make_service):
    async with make_service(staging_grace_s=60) as svc:
        root = svc.storage.local_path("")
        old = time.time() - 3600
        dead_upload = f"{root}/staging/{uuid.uuid4()}"
        os.makedirs(dead_upload)
        os.makedirs(f"{root}/objects/{svc.account}/x")
        for path in (f"{dead_upload}/.part-0123abcd", f"{root}/objects/{svc.account}/x/.part-original"):
            with open(path, "wb") as f:
                f.write(b"half")
            os.utime(path, (old, old))
        fresh = f"{root}/staging/{uuid.uuid4()}"
        os.makedirs(fresh)
        with open(f"{fresh}/.part-live", "wb") as f:  # an upload streaming right now: kept
            f.write(b"live")

        await sweep(svc)
        assert not os.path.exists(dead_upload) and os.path.exists(f"{fresh}/.part-live")
        wctx = await WorkerContext.open(svc.settings)
        try:
            assert await sweep_object_partials({"attachd": wctx}) == 1
        finally:
            await wctx.close()
        assert not os.path.exists(f"{root}/objects/{svc.account}/x")


async def test_s3_multipart_uploads_a_killed_writer_left_are_aborted(s3_endpoint):
    bucket = f"attachd-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    s3.create_multipart_upload(Bucket=bucket, Key="data/staging/u/0")
    store = await open_storage(f"s3://{bucket}/data", s3_endpoint_url=s3_endpoint)
    try:
        # (moto dates every multipart upload 2010, so "begun recently: kept" is the file backend's test)
        assert await store.remove_partials("objects/", time.time() + 1) == 0  # another prefix: kept
        assert await store.remove_partials("staging/", time.time() + 1) == 1
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    finally:
        await store.close()
