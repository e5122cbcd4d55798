"""Object storage: a local directory (``file``) or S3 (``s3``, aioboto3), behind one small interface.

Keys are always ours (``objects/<account>/<id>/original``); a client's filename
never becomes part of a key. Bytes move in chunks; nothing here holds a whole
upload in memory.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import urlparse

import msgspec
from prometheus_client import Histogram

CHUNK = 1 << 20  # bytes per chunk read
_T = TypeVar("_T")

OPERATION_SECONDS = Histogram(
    "attachd_storage_seconds",
    "Storage operations by backend and operation, in seconds (read and list: until the first chunk or object)",
    ["backend", "operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class SizeLimitExceeded(Exception):
    """The stream grew past the limit it was given; nothing was kept."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: float


class Resumable(msgspec.Struct, frozen=True, kw_only=True):
    """A write that goes on across requests and processes (a tus upload): its durable progress, which its
    caller keeps (in Redis) and hands back to continue it. Only ``offset`` bytes are known to be stored.

    On S3 the bytes are the parts of one multipart upload, each ``part_size`` bytes, and a tail object of
    the bytes after the last part (fewer than ``part_size``: S3 takes no smaller part but the last); in a
    directory, one file at ``key`` that grows.
    """

    key: str
    part_size: int
    offset: int = 0
    multipart_id: str | None = None  # S3: the multipart upload, made when its first part is ready
    parts: tuple[str, ...] = ()  # S3: the ETags of parts 1..n
    tail_key: str | None = None  # S3: the object holding the bytes after the last part

    @property
    def tail_size(self) -> int:
        return self.offset - len(self.parts) * self.part_size


# Called with the progress of a write whenever more of its bytes have become durable.
Checkpoint = Callable[[Resumable], Awaitable[None]]


class Storage(Protocol):
    async def write_stream(self, key: str, chunks: AsyncIterator[bytes], *, limit: int | None = None) -> int: ...
    async def put_bytes(self, key: str, data: bytes) -> None: ...
    async def put_file(self, key: str, path: str) -> None: ...
    async def get_bytes(self, key: str) -> bytes: ...
    async def download_to(self, key: str, path: str) -> None: ...
    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]: ...
    async def size(self, key: str) -> int | None: ...
    async def copy(self, src: str, dst: str) -> None: ...
    def local_path(self, key: str) -> str | None: ...
    async def delete(self, *keys: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> None: ...
    def list(self, prefix: str) -> AsyncIterator[StoredObject]: ...
    # Remove writes a killed process never finished, begun before ``older_than``, but those at ``keep`` keys.
    async def remove_partials(self, prefix: str, older_than: float, keep: Collection[str] = ()) -> int: ...
    # Resumable writes: ``append`` stores the chunks at ``write.offset`` (whatever was stored past it goes) and
    # returns the progress once they are durable, calling ``checkpoint`` on the way as whole parts become
    # durable; ``finish`` makes the object at ``write.key`` of all its bytes; ``abort`` drops what it stored.
    async def append(
        self, write: Resumable, chunks: AsyncIterator[bytes], checkpoint: Checkpoint | None = None
    ) -> Resumable: ...
    async def finish(self, write: Resumable) -> None: ...
    async def abort(self, write: Resumable) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


class TimedStorage:
    """A backend whose operations are timed in ``attachd_storage_seconds``."""

    def __init__(self, inner: Storage, backend: str) -> None:
        self.inner = inner
        self.backend = backend
        for operation in _TIMED:  # every series shows, at 0, before its first use
            OPERATION_SECONDS.labels(backend, operation)

    @contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            OPERATION_SECONDS.labels(self.backend, operation).observe(time.perf_counter() - started)

    async def _until_first(self, operation: str, items: AsyncIterator[_T]) -> AsyncIterator[_T]:
        started = time.perf_counter()
        timed = False
        try:
            async for item in items:
                if not timed:
                    timed = True
                    OPERATION_SECONDS.labels(self.backend, operation).observe(time.perf_counter() - started)
                yield item
        finally:
            if not timed:
                OPERATION_SECONDS.labels(self.backend, operation).observe(time.perf_counter() - started)
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

    async def write_stream(self, key: str, chunks: AsyncIterator[bytes], *, limit: int | None = None) -> int:
        with self._timed("write_stream"):
            return await self.inner.write_stream(key, chunks, limit=limit)

    async def put_bytes(self, key: str, data: bytes) -> None:
        with self._timed("put_bytes"):
            await self.inner.put_bytes(key, data)

    async def put_file(self, key: str, path: str) -> None:
        with self._timed("put_file"):
            await self.inner.put_file(key, path)

    async def get_bytes(self, key: str) -> bytes:
        with self._timed("get_bytes"):
            return await self.inner.get_bytes(key)

    async def download_to(self, key: str, path: str) -> None:
        with self._timed("download_to"):
            await self.inner.download_to(key, path)

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return self._until_first("read", self.inner.read(key, start, end))

    async def size(self, key: str) -> int | None:
        with self._timed("size"):
            return await self.inner.size(key)

    async def copy(self, src: str, dst: str) -> None:
        with self._timed("copy"):
            await self.inner.copy(src, dst)

    def local_path(self, key: str) -> str | None:
        return self.inner.local_path(key)

    async def delete(self, *keys: str) -> None:
        with self._timed("delete"):
            await self.inner.delete(*keys)

    async def delete_prefix(self, prefix: str) -> None:
        with self._timed("delete_prefix"):
            await self.inner.delete_prefix(prefix)

    def list(self, prefix: str) -> AsyncIterator[StoredObject]:
        return self._until_first("list", self.inner.list(prefix))

    async def remove_partials(self, prefix: str, older_than: float, keep: Collection[str] = ()) -> int:
        with self._timed("remove_partials"):
            return await self.inner.remove_partials(prefix, older_than, keep)

    async def append(
        self, write: Resumable, chunks: AsyncIterator[bytes], checkpoint: Checkpoint | None = None
    ) -> Resumable:
        with self._timed("append"):
            return await self.inner.append(write, chunks, checkpoint)

    async def finish(self, write: Resumable) -> None:
        with self._timed("finish"):
            await self.inner.finish(write)

    async def abort(self, write: Resumable) -> None:
        with self._timed("abort"):
            await self.inner.abort(write)

    async def ping(self) -> None:
        with self._timed("ping"):
            await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


_TIMED = (
    "write_stream",
    "put_bytes",
    "put_file",
    "get_bytes",
    "download_to",
    "read",
    "size",
    "copy",
    "delete",
    "delete_prefix",
    "list",
    "remove_partials",
    "append",
    "finish",
    "abort",
    "ping",
)


async def open_storage(url: str, *, s3_endpoint_url: str | None = None, s3_region: str = "us-east-1") -> Storage:
    """``file:///var/lib/attachd`` or ``s3://bucket/prefix``, its operations timed (:class:`TimedStorage`)."""
    parsed = urlparse(url)
    # Imported here: each backend imports this module, and a process needs only the one it uses.
    if parsed.scheme == "file":
        from services.core.storage.file import FileStorage

        return TimedStorage(FileStorage(parsed.path), "file")
    if parsed.scheme == "s3":
        from services.core.storage.s3 import S3Storage

        store = await S3Storage.open(parsed.netloc, parsed.path, endpoint_url=s3_endpoint_url, region=s3_region)
        return TimedStorage(store, "s3")
    raise ValueError(f"ATTACHD_STORAGE_URL must be file:///path or s3://bucket/prefix, not {url!r}")


def staging_prefix(upload_id: str) -> str:
    return f"staging/{upload_id}/"


def staged_key(upload_id: str, index: int) -> str:
    return f"staging/{upload_id}/{index}"


def manifest_key(upload_id: str) -> str:
    return f"staging/{upload_id}/manifest.json"


def object_key(account_id: str, attachment_id: str, variant: str = "original") -> str:
    return f"objects/{account_id}/{attachment_id}/{variant}"
