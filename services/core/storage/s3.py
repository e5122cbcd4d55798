"""Objects in S3 or any S3-compatible server, through aioboto3."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection
from typing import Any

import msgspec

from services.core.storage import CHUNK, Checkpoint, Resumable, SizeLimitExceeded, StoredObject

S3_PART = 8 << 20  # S3 parts must be >= 5 MiB except the last


class S3Storage:
    """S3 or any S3-compatible server through aioboto3; large writes are multipart uploads."""

    def __init__(self, client: Any, bucket: str, prefix: str, stack: contextlib.AsyncExitStack) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix
        self._stack = stack

    @classmethod
    async def open(
        cls,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        max_attempts: int = 5,
    ) -> S3Storage:
        import aioboto3
        from botocore.config import Config

        stack = contextlib.AsyncExitStack()
        session = aioboto3.Session()
        config = Config(retries={"max_attempts": max_attempts, "mode": "standard"}, max_pool_connections=50)
        client = await stack.enter_async_context(
            session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        )
        return cls(client, bucket, prefix.strip("/"), stack)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    async def write_stream(self, key: str, chunks: AsyncIterator[bytes], *, limit: int | None = None) -> int:
        buf = bytearray()
        size = 0
        upload_id = None
        parts: list[dict[str, Any]] = []
        full_key = self._key(key)

        async def upload_part() -> None:
            part = await self._client.upload_part(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=bytes(buf)
            )
            parts.append({"PartNumber": len(parts) + 1, "ETag": part["ETag"]})
            buf.clear()

        try:
            async for chunk in chunks:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise SizeLimitExceeded(key)
                buf += chunk
                if len(buf) >= S3_PART:
                    if upload_id is None:
                        created = await self._client.create_multipart_upload(Bucket=self.bucket, Key=full_key)
                        upload_id = created["UploadId"]
                    await upload_part()
            if upload_id is None:
                await self._client.put_object(Bucket=self.bucket, Key=full_key, Body=bytes(buf))
                return size
            if buf:
                await upload_part()
            await self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            return size
        except BaseException:
            # Cancellation included: an abandoned multipart upload keeps billing until aborted.
            if upload_id is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        self._client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)
                    )
            raise

    async def append(
        self, write: Resumable, chunks: AsyncIterator[bytes], checkpoint: Checkpoint | None = None
    ) -> Resumable:
        """Continue the write: its tail object and the chunks, cut into ``part_size`` parts of one multipart
        upload (each checkpointed once uploaded); what is left, fewer than ``part_size`` bytes, becomes the
        new tail object. At most one part is held in memory.

        A part uploaded but never recorded (the process died, or the caller dropped the chunk) is overwritten
        by the next one of its number; a tail object is never overwritten, as its key names its end offset.
        """
        full_key = self._key(write.key)
        buf = bytearray()
        if write.tail_size:
            assert write.tail_key is not None  # a tail has its object
            buf += await self.get_bytes(write.tail_key)
            if len(buf) != write.tail_size:
                raise RuntimeError(f"the tail of {write.key} holds {len(buf)} bytes, not {write.tail_size}")
        progress = write
        async for chunk in chunks:
            view = memoryview(chunk)
            while view:
                take = min(len(view), write.part_size - len(buf))
                buf += view[:take]
                view = view[take:]
                if len(buf) < write.part_size:
                    continue
                multipart_id = progress.multipart_id
                if multipart_id is None:
                    created = await self._client.create_multipart_upload(Bucket=self.bucket, Key=full_key)
                    multipart_id = created["UploadId"]
                number = len(progress.parts) + 1
                part = await self._client.upload_part(  # the buffer itself: no second copy of a part
                    Bucket=self.bucket, Key=full_key, UploadId=multipart_id, PartNumber=number, Body=buf
                )
                buf = bytearray()
                progress = msgspec.structs.replace(
                    progress,
                    multipart_id=multipart_id,
                    parts=(*progress.parts, part["ETag"]),
                    offset=number * write.part_size,
                    tail_key=None,
                )
                if checkpoint is not None:
                    await checkpoint(progress)
        if not buf:
            return progress
        end = len(progress.parts) * write.part_size + len(buf)  # the tail holds the bytes from the last part on
        tail_key = f"{write.key}.tail-{end}"
        await self._client.put_object(Bucket=self.bucket, Key=self._key(tail_key), Body=buf)
        return msgspec.structs.replace(progress, offset=end, tail_key=tail_key)

    async def finish(self, write: Resumable) -> None:
        """Assemble the object in S3 itself: the parts and the tail (copied as the last part), or the tail
        alone (copied); no byte goes through this process. Done again, it does nothing."""
        full_key = self._key(write.key)
        tail = None if not write.tail_size else {"Bucket": self.bucket, "Key": self._key(write.tail_key or "")}
        if not write.parts:
            if tail is None:
                await self._client.put_object(Bucket=self.bucket, Key=full_key, Body=b"")
            else:
                await self._client.copy_object(Bucket=self.bucket, Key=full_key, CopySource=tail)
            return
        parts = [{"PartNumber": i + 1, "ETag": etag} for i, etag in enumerate(write.parts)]
        try:
            if tail is not None:
                copied = await self._client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=full_key,
                    UploadId=write.multipart_id,
                    PartNumber=len(parts) + 1,
                    CopySource=tail,
                )
                parts.append({"PartNumber": len(parts) + 1, "ETag": copied["CopyPartResult"]["ETag"]})
            await self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=write.multipart_id, MultipartUpload={"Parts": parts}
            )
        except self._client.exceptions.NoSuchUpload:
            if await self.size(write.key) != write.offset:  # not completed by an earlier try: lost
                raise

    async def abort(self, write: Resumable) -> None:
        """Abort the multipart upload (S3 bills its parts until then) and delete the object and its tails."""
        if write.multipart_id is not None:
            with contextlib.suppress(self._client.exceptions.NoSuchUpload):
                await self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._key(write.key), UploadId=write.multipart_id
                )
        await self.delete_prefix(write.key)

    async def put_bytes(self, key: str, data: bytes) -> None:
        await self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    async def put_file(self, key: str, path: str) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            with open(path, "rb") as f:
                while chunk := await asyncio.to_thread(f.read, S3_PART):
                    yield chunk

        await self.write_stream(key, chunks())

    async def get_bytes(self, key: str) -> bytes:
        obj = await self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        body = obj["Body"]
        try:
            data: bytes = await body.read()
            return data
        finally:
            body.close()

    async def download_to(self, key: str, path: str) -> None:
        with open(path, "wb") as f:
            async for chunk in self.read(key):
                await asyncio.to_thread(f.write, chunk)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        kwargs = {}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end}"
        obj = await self._client.get_object(Bucket=self.bucket, Key=self._key(key), **kwargs)
        body = obj["Body"]
        try:
            while chunk := await body.read(CHUNK):
                yield chunk
        finally:
            body.close()

    async def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = await self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        size: int = head["ContentLength"]
        return size

    def local_path(self, key: str) -> str | None:
        return None

    async def copy(self, src: str, dst: str) -> None:
        await self._client.copy_object(
            Bucket=self.bucket, Key=self._key(dst), CopySource={"Bucket": self.bucket, "Key": self._key(src)}
        )

    async def delete(self, *keys: str) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            if batch:
                await self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    async def delete_prefix(self, prefix: str) -> None:
        keys = [obj.key async for obj in self.list(prefix)]
        await self.delete(*keys)

    async def list(self, prefix: str) -> AsyncIterator[StoredObject]:
        paginator = self._client.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for item in page.get("Contents", []):
                yield StoredObject(item["Key"][strip:], item["Size"], item["LastModified"].timestamp())

    async def remove_partials(self, prefix: str, older_than: float, keep: Collection[str] = ()) -> int:
        """Abort multipart uploads under ``prefix`` begun before ``older_than`` (a Unix time), but those of
        the ``keep`` keys (resumable writes still going on): a killed writer's parts are billed until then;
        how many."""
        kept = {self._key(key) for key in keep}
        aborted = 0
        paginator = self._client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() < older_than and upload["Key"] not in kept:
                    with contextlib.suppress(self._client.exceptions.NoSuchUpload):
                        await self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    aborted += 1
        return aborted

    async def ping(self) -> None:
        await self._client.head_bucket(Bucket=self.bucket)

    async def ensure_bucket(self) -> bool:
        """Create the bucket unless it exists (a local S3 server's first start); True when this created it."""
        from botocore.exceptions import ClientError

        try:
            await self._client.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
        try:
            await self._client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:  # another process made it meanwhile
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
            return False
        return True

    async def close(self) -> None:
        await self._stack.aclose()
