"""S3 storage streams large objects as multipart uploads: whole when they complete, nothing when they do not."""

from __future__ import annotations

import hashlib
import os
import uuid

import boto3
import pytest

from services.core.storage import SizeLimitExceeded, open_storage
from services.core.storage.s3 import S3_PART


async def chunks(data: bytes, size: int = 1 << 20):
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
async def s3(s3_endpoint):
    bucket = f"attachd-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    store = await open_storage(f"s3://{bucket}/data", s3_endpoint_url=s3_endpoint)
    yield store, client, bucket
    await store.close()


async def test_a_stream_larger_than_a_part_is_stored_whole(s3):
    store, _, _ = s3
    data = os.urandom(2 * S3_PART + 12345)  # two full parts and a short last one
    assert await store.write_stream("objects/a/x/original", chunks(data)) == len(data)
    assert await store.size("objects/a/x/original") == len(data)
    stored = b"".join([c async for c in store.read("objects/a/x/original")])
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()


async def test_a_stream_over_its_limit_leaves_no_object_and_no_parts(s3):
    store, client, bucket = s3
    data = os.urandom(S3_PART + (2 << 20))
    with pytest.raises(SizeLimitExceeded):
        await store.write_stream("staging/u/0", chunks(data), limit=S3_PART + (1 << 20))
    assert await store.size("staging/u/0") is None
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
