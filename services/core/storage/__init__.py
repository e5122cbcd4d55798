"""Object storage: a local directory (``file``) or S3 (``s3``, aioboto3), behind one small interface.

Keys are always ours (``objects/<account>/<id>/original``); a client's filename
never becomes part of a key. Bytes move in chunks; nothing here holds a whole
upload in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlparse

CHUNK = 1 << 20  # bytes per chunk read


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
    def local_path(self, key: str) -> str | None: ...
    async def delete(self, *keys: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> None: ...
    def list(self, prefix: str) -> AsyncIterator[StoredObject]: ...
    async def remove_partials(self, prefix: str, older_than: float) -> int: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


async def open_storage(url: str, *, s3_endpoint_url: str | None = None, s3_region: str = "us-east-1") -> Storage:
    """``file:///var/lib/attachd`` or ``s3://bucket/prefix``."""
    parsed = urlparse(url)
    # Imported here: each backend imports this module, and a process needs only the one it uses.
    if parsed.scheme == "file":
        from services.core.storage.file import FileStorage

        return FileStorage(parsed.path)
    if parsed.scheme == "s3":
        from services.core.storage.s3 import S3Storage

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
