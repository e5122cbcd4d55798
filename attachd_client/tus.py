"""A small tus 1.0 client (https://tus.io/protocols/resumable-upload) for attachd's ``/v1/uploads/tus``:
create an upload, ask its offset (HEAD), send the file in chunks (PATCH, each with its sha256 in
``Upload-Checksum``), resume after a failure, terminate.

The upload's URL is all it takes to resume: :func:`upload_file` takes one it was given before (by an
earlier run, see attachd_client/state.py) and goes on from the offset attachd has.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from attachd_client import errors
from attachd_client.retries import backoff_s, repeatable, resumable, retrying
from attachd_client.streams import Pacer, Progress, SizedStream, bytes_in_pieces, read_slice
from attachd_client.transport import Transport

VERSION = "1.0.0"
ENDPOINT = "/v1/uploads/tus"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
DEFAULT_CHUNK = 8 * 1024 * 1024
DEFAULT_RETRIES = 5


def encode_metadata(fields: Mapping[str, str]) -> str:
    """``Upload-Metadata``: ``key base64(value)`` pairs, comma-separated."""
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode('ascii')}" for key, value in fields.items())


def checksum_header(chunk: bytes) -> str:
    return f"sha256 {base64.b64encode(hashlib.sha256(chunk).digest()).decode('ascii')}"


def upload_id(url: str) -> str:
    """The id in an upload's URL: attachd makes it the id of the ingest job and of the attachment."""
    return url.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class TusClient:
    transport: Transport
    endpoint: str = ENDPOINT

    def _headers(self, **more: str) -> dict[str, str]:
        return {"Tus-Resumable": VERSION, **more}

    async def create(self, length: int, metadata: Mapping[str, str], idempotency_key: str | None = None) -> str:
        """A new upload of ``length`` bytes; its URL. attachd checks the metadata's create fields now. A
        retry with the same ``idempotency_key`` answers with the same upload."""
        headers = self._headers(**{"Upload-Length": str(length), "Upload-Metadata": encode_metadata(metadata)})
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        _, answer, _ = await self.transport.call("POST", self.endpoint, headers=headers)
        location = answer.get("Location")
        if not location:
            raise errors.AttachdError("protocol_error", "the tus creation answered without a Location")
        return self.transport.url(location)

    async def offset(self, url: str) -> int:
        """How many bytes of the upload attachd has (404: unknown, 410: expired)."""
        _, answer, _ = await self.transport.call("HEAD", url, headers=self._headers())
        return int(answer["Upload-Offset"])

    async def send(
        self, url: str, offset: int, chunk: bytes, progress: Progress | None = None, pacer: Pacer | None = None
    ) -> int:
        """PATCH ``chunk`` at ``offset``; the upload's offset after it."""
        headers = self._headers(
            **{
                "Upload-Offset": str(offset),
                "Upload-Checksum": checksum_header(chunk),
                "Content-Type": OFFSET_CONTENT_TYPE,
            }
        )
        body = SizedStream(bytes_in_pieces(chunk, offset, progress, pacer or Pacer(None)), len(chunk))
        _, answer, _ = await self.transport.call("PATCH", url, data=body, headers=headers)
        return int(answer["Upload-Offset"])

    async def terminate(self, url: str) -> None:
        """Drop the upload and every byte it stored."""
        await self.transport.call("DELETE", url, headers=self._headers())


async def upload_file(
    tus: TusClient,
    path: Path,
    metadata: Mapping[str, str],
    *,
    url: str | None = None,
    on_created: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    retries: int = DEFAULT_RETRIES,
    rate: int | None = None,
) -> str:
    """Send the file at ``path`` over tus, resuming the upload at ``url`` when there is one attachd still
    has; the upload's URL once attachd has every byte. ``on_created`` is told a new upload's URL before a
    byte is sent (to remember it). A failure that a retry may cure is retried ``retries`` times in a row,
    each time from the offset attachd reports."""
    length = path.stat().st_size
    offset = await _resumed_offset(tus, url) if url else None
    if url is None or offset is None:
        key = str(uuid.uuid4())
        url = await retrying(lambda: tus.create(length, metadata, key), repeatable, retries)
        offset = 0
        if on_created is not None:
            on_created(url)
    if progress is not None:
        progress(offset)
    pacer, failures = Pacer(rate), 0
    while offset < length:
        chunk = await asyncio.to_thread(read_slice, path, offset, min(chunk_size, length - offset))
        try:
            offset = await tus.send(url, offset, chunk, progress, pacer)
            failures = 0
        except errors.AttachdError as exc:
            failures += 1
            if not resumable(exc) or failures > retries:
                raise
            await asyncio.sleep(backoff_s(failures))
            offset = await retrying(lambda: tus.offset(url), resumable, retries)
            if progress is not None:
                progress(offset)
    return url


async def _resumed_offset(tus: TusClient, url: str) -> int | None:
    """The offset of an upload made earlier, or None when attachd no longer has it (expired, terminated,
    finished long ago and forgotten)."""
    try:
        return await tus.offset(url)
    except (errors.NotFound, errors.Gone):
        return None
