"""Object storage: a local directory or S3 (aioboto3), behind one small interface.

Keys are always ours (``objects/<account>/<id>/original``); a client's filename
never becomes part of a key. Bytes move in chunks; nothing here holds a whole
upload in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

CHUNK = 1 << 20
WRITE_BATCH = 1 << 20  # FileStorage.write_stream: bytes gathered per thread hop
S3_PART = 8 << 20  # S3 parts must be >= 5 MiB except the last


class SizeLimitExceeded(Exception):
    """The stream grew past the limit it was given; nothing was kept."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: float


class Storage(Protocol):
    async def write_stream(self, key: str, chunks: AsyncIterator[bytes], *, limit: int | None = None) -> int: ...
    async def put_bytes(self, key: str, data: bytes) -> None: ...
    async def put_file(self, key: str, path: str) -> None: ...
    async def get_bytes(self, key: str) -> bytes: ...
    async def download_to(self, key: str, path: str) -> None: ...
    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]: ...
    async def size(self, key: str) -> int | None: ...
    async def copy(self, src: str, dst: str) -> None: ...
    async def move(self, src: str, dst: str) -> None: ...
    def local_path(self, key: str) -> str | None: ...
    async def delete(self, *keys: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> None: ...
    def list(self, prefix: str) -> AsyncIterator[StoredObject]: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


def _write_all(fd: int, data: list[bytes]) -> None:
    """Write every buffer, in order, with as few system calls as the kernel allows."""
    pending = [memoryview(d) for d in data if len(d)]
    while pending:
        group = pending[:_IOV_MAX]
        written = os.writev(fd, group)
        done = 0
        while done < len(group) and written >= len(group[done]):
            written -= len(group[done])
            done += 1
        pending = pending[done:]
        if written:
            pending[0] = pending[0][written:]


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


class _StagedFile:
    """One object being written under a temporary name; its methods run in a worker thread, one at a time.

    Only system calls run in the thread (no pathlib, no tempfile), so it holds the GIL as little as it can:
    the event loop keeps parsing other uploads meanwhile.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._dir = os.path.dirname(path)
        self._fd = -1
        self._tmp: str | None = None

    def _open(self) -> None:
        made_dir = False
        while True:
            tmp = f"{self._dir}/.part-{os.urandom(8).hex()}"
            try:
                self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except FileNotFoundError:  # the first object under this prefix: make its directory, once
                if made_dir:
                    raise
                os.makedirs(self._dir, exist_ok=True)
                made_dir = True
                continue
            except FileExistsError:  # 64 random bits taken: try another name
                continue
            self._tmp = tmp
            return

    def write(self, data: list[bytes]) -> None:
        if self._fd < 0:
            self._open()
        _write_all(self._fd, data)

    def commit(self, data: list[bytes]) -> None:
        self.write(data)
        fd, self._fd = self._fd, -1
        os.close(fd)
        os.replace(self._tmp, self._path)
        self._tmp = None

    async def abort_after(self, writing: asyncio.Future | None) -> None:
        """Remove the temporary file once no thread touches it (a hop in flight finishes first)."""
        if writing is not None and not writing.done():
            try:
                await asyncio.wait([writing])
            finally:
                if not writing.done():  # cancelled while waiting: the hop's end removes it
                    writing.add_done_callback(lambda _: self.abort())
        if writing is None or writing.done():
            self.abort()

    def abort(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None


class FileStorage:
    """Objects as files under one directory; writes land atomically by rename."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._real_root = os.path.realpath(self.root)

    def _file(self, key: str) -> str:
        """The path of ``key``, found without a system call (this runs on the event loop): keys are made by
        attachd, never by a client, so ``..`` is all that could lead out of the root."""
        path = os.path.normpath(os.path.join(self._real_root, key))
        if path != self._real_root and not path.startswith(self._real_root + os.sep):
            raise ValueError(f"storage key escapes the root: {key!r}")
        return path

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    async def write_stream(self, key: str, chunks: AsyncIterator[bytes], *, limit: int | None = None) -> int:
        """Write the chunks to ``key``; it appears (by rename) only once all of them are written.

        Chunks are gathered into batches of WRITE_BATCH bytes and each batch is written by one thread hop
        (``os.writev``, no joining), while the next batch is being received: a thread hop per chunk cost
        more CPU than the write itself. A stream that fits in one batch takes a single hop from mkdir to
        rename.
        """
        loop = asyncio.get_running_loop()
        staged = _StagedFile(self._file(key))
        batch: list[bytes] = []
        batched = size = 0
        writing: asyncio.Future | None = None  # the hop in flight, at most one
        try:
            async for chunk in chunks:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise SizeLimitExceeded(key)
                batch.append(chunk)
                batched += len(chunk)
                if batched >= WRITE_BATCH:
                    if writing is not None:
                        await writing
                    writing = loop.run_in_executor(None, staged.write, batch)
                    batch, batched = [], 0
            if writing is not None:
                await writing
            writing = loop.run_in_executor(None, staged.commit, batch)
            await writing
        except BaseException:
            await staged.abort_after(writing)
            raise
        return size

    async def put_bytes(self, key: str, data: bytes) -> None:
        staged = _StagedFile(self._file(key))
        writing = asyncio.get_running_loop().run_in_executor(None, staged.commit, [data])
        try:
            await writing
        except BaseException:
            await staged.abort_after(writing)
            raise

    async def put_file(self, key: str, path: str) -> None:
        dst = self._path(key)

        def copy() -> None:
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".part-{dst.name}")
            shutil.copyfile(path, tmp)
            os.replace(tmp, dst)

        await asyncio.to_thread(copy)

    async def get_bytes(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    async def download_to(self, key: str, path: str) -> None:
        await asyncio.to_thread(shutil.copyfile, self._path(key), path)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, self._path(key), "rb")
        try:
            await asyncio.to_thread(f.seek, start)
            remaining = None if end is None else end - start + 1
            while remaining is None or remaining > 0:
                want = CHUNK if remaining is None else min(CHUNK, remaining)
                chunk = await asyncio.to_thread(f.read, want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            f.close()

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self._path(key).stat)).st_size
        except FileNotFoundError:
            return None

    def local_path(self, key: str) -> str | None:
        return str(self._path(key))

    async def copy(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)

        def link() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".part-{target.name}")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            try:
                os.link(source, tmp)  # objects are immutable, so a second name is a copy
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)

        await asyncio.to_thread(link)

    async def move(self, src: str, dst: str) -> None:
        target = self._path(dst)

        def rename() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._path(src), target)

        await asyncio.to_thread(rename)

    async def delete(self, *keys: str) -> None:
        def unlink() -> None:
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    self._path(key).unlink()

        await asyncio.to_thread(unlink)

    async def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)

        def remove() -> None:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

        await asyncio.to_thread(remove)

    async def list(self, prefix: str) -> AsyncIterator[StoredObject]:
        base = self._path(prefix)

        def walk() -> list[StoredObject]:
            found = []
            for dirpath, _, files in os.walk(base):
                for name in files:
                    if name.startswith(".part-"):
                        continue
                    full = Path(dirpath) / name
                    st = full.stat()
                    found.append(StoredObject(str(full.relative_to(self.root)), st.st_size, st.st_mtime))
            return found

        for obj in await asyncio.to_thread(walk):
            yield obj

    async def ping(self) -> None:
        if not await asyncio.to_thread(os.access, self.root, os.W_OK):
            raise RuntimeError(f"storage directory {self.root} is not writable")

    async def close(self) -> None:
        return None


class S3Storage:
    """S3 or any S3-compatible server through aioboto3; large writes are multipart uploads."""

    def __init__(self, client, bucket: str, prefix: str, stack: contextlib.AsyncExitStack) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix
        self._stack = stack

    @classmethod
    async def open(
        cls, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str = "us-east-1"
    ) -> S3Storage:
        import aioboto3
        from botocore.config import Config

        stack = contextlib.AsyncExitStack()
        session = aioboto3.Session()
        config = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=50)
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
        parts: list[dict] = []
        full_key = self._key(key)
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
                    part = await self._client.upload_part(
                        Bucket=self.bucket,
                        Key=full_key,
                        UploadId=upload_id,
                        PartNumber=len(parts) + 1,
                        Body=bytes(buf),
                    )
                    parts.append({"PartNumber": len(parts) + 1, "ETag": part["ETag"]})
                    buf.clear()
            if upload_id is None:
                await self._client.put_object(Bucket=self.bucket, Key=full_key, Body=bytes(buf))
                return size
            if buf:
                part = await self._client.upload_part(
                    Bucket=self.bucket,
                    Key=full_key,
                    UploadId=upload_id,
                    PartNumber=len(parts) + 1,
                    Body=bytes(buf),
                )
                parts.append({"PartNumber": len(parts) + 1, "ETag": part["ETag"]})
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
            return await body.read()
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
        return head["ContentLength"]

    def local_path(self, key: str) -> str | None:
        return None

    async def copy(self, src: str, dst: str) -> None:
        await self._client.copy_object(
            Bucket=self.bucket, Key=self._key(dst), CopySource={"Bucket": self.bucket, "Key": self._key(src)}
        )

    async def move(self, src: str, dst: str) -> None:
        await self.copy(src, dst)
        await self.delete(src)

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

    async def ping(self) -> None:
        await self._client.head_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        await self._stack.aclose()


async def open_storage(url: str, *, s3_endpoint_url: str | None = None, s3_region: str = "us-east-1") -> Storage:
    """``file:///var/lib/attachd`` or ``s3://bucket/prefix``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FileStorage(parsed.path)
    if parsed.scheme == "s3":
        return await S3Storage.open(parsed.netloc, parsed.path, endpoint_url=s3_endpoint_url, region=s3_region)
    raise ValueError(f"ATTACHD_STORAGE_URL must be file:///path or s3://bucket/prefix, not {url!r}")


def staging_prefix(upload_id: str) -> str:
    return f"staging/{upload_id}/"


def staged_key(upload_id: str, index: int) -> str:
    return f"staging/{upload_id}/{index}"


def manifest_key(upload_id: str) -> str:
    return f"staging/{upload_id}/manifest.json"


def object_key(account_id: str, attachment_id: str, variant: str = "original") -> str:
    return f"objects/{account_id}/{attachment_id}/{variant}"
