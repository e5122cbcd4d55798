"""Resumable uploads: the tus 1.0 protocol at ``/v1/uploads/tus`` (rules in services/core/tus.py).

``POST`` creates an upload (its ``Upload-Metadata`` carries the create fields, checked at once; the account's
file limit and byte budget are applied to its ``Upload-Length``), ``HEAD`` tells its offset, ``PATCH``
appends bytes at that offset straight to storage, ``DELETE`` terminates it. The upload's id is its ingest
job's: when the last byte is stored the upload becomes an ordinary ingest job, and ``GET /v1/uploads/{id}``
follows it as any write. The state is in Redis (services/core/tus_uploads.py), so any ingress process goes
on with any upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from services.core import budget, logs, storage, tus
from services.core.auth import WRITE, Principal
from services.core.contract import Actor, IngestItem, IngestJob, StagedSource
from services.core.errors import ApiError
from services.core.jobs import UPLOAD_TTL_S
from services.core.tus_uploads import Locked, LockLost, TusUpload, TusUploads
from services.ingress import writes
from services.ingress.handlers import new_id
from services.web.engines import BUDGET, REDIS, STORAGE
from services.web.http import SETTINGS, own_url, principal, request_id

PATH = "/v1/uploads/tus"
UPLOADS = web.AppKey("tus_uploads", TusUploads)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application, id_pattern: str) -> None:
    app.router.add_route("OPTIONS", PATH, options)
    app.router.add_post(PATH, create)
    upload = f"{PATH}/{id_pattern}"
    app.router.add_route("OPTIONS", upload, options)
    app.router.add_head(upload, head)
    app.router.add_patch(upload, patch)
    app.router.add_delete(upload, terminate)
    app.cleanup_ctx.append(_uploads_ctx)


async def _uploads_ctx(app: web.Application) -> AsyncIterator[None]:
    app[UPLOADS] = TusUploads(app[REDIS])
    yield


def _tus(handler: Handler) -> Handler:
    """Every answer, errors included, says which tus version it speaks."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            exc.headers = {**tus.headers(), **exc.headers}
            raise
        except (Locked, LockLost):  # another request writes it, or took it over from this stalled one
            raise tus.tus_error(
                "upload_locked",
                "another request is writing this upload; HEAD it and resume once that one is done",
                423,
                **{"Retry-After": "1"},
            ) from None

    return handle


@_tus
async def options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=tus.options_headers(request.app[SETTINGS].max_file_bytes))


def _upload_url(request: web.Request, upload_id: str) -> str:
    """Where the client reached this ingress: the upload goes on where it began, not at ATTACHD_PUBLIC_URL when
    that names another part (the query service, where compose.yaml publishes the parts apart)."""
    return f"{own_url(request)}{PATH}/{upload_id}"


@_tus
async def create(request: web.Request) -> web.Response:
    """``creation``, and ``creation-with-upload`` when the request carries the first bytes."""
    tus.check_resumable(request.headers.get("Tus-Resumable"))
    who = await principal(request, WRITE)
    metadata = tus.parse_metadata(request.headers.get("Upload-Metadata"))
    fields = tus.new_attachment(metadata)  # a bad field: refused before any byte is sent
    tus.check_named_extension(fields, metadata, request.app[SETTINGS].allowed_extensions)
    length = tus.parse_length(request.headers.get("Upload-Length"))
    with_body = request.content_type == tus.OFFSET_CONTENT_TYPE
    checksum = tus.parse_checksum(request.headers.get("Upload-Checksum")) if with_body else None
    settings, uploads = request.app[SETTINGS], request.app[UPLOADS]
    upload_id = new_id()
    logs.bind(job_id=upload_id)
    claim = writes.idempotency_claim(request, who.account_id)
    try:
        admission = await request.app[BUDGET].admit(
            settings, who.account_id, upload_id, length, file_bytes=length, claim=claim, what="an upload"
        )
    except budget.FileTooLarge as exc:
        raise tus.too_large(exc.limits.max_file_bytes) from None
    if admission.earlier is not None:  # a retried creation: the upload the first one made
        return await _replayed_creation(request, who, admission.earlier)
    upload = TusUpload(
        id=upload_id,
        account_id=who.account_id,
        actor=Actor(type=who.actor_type, id=who.actor_id),  # type: ignore[arg-type]  # a checked token claim
        length=length,
        metadata=metadata,
        fields=fields,
        max_file_bytes=admission.limits.max_file_bytes,
        expires=time.time() + settings.tus_expiry_s,
        write=storage.Resumable(
            key=storage.staged_key(upload_id, 0), part_size=tus.part_size(length, settings.tus_part_bytes)
        ),
    )
    await uploads.create(upload)
    if claim is not None:  # a retry of this creation now finds this upload
        await request.app[REDIS].set(claim[0], upload_id, ex=UPLOAD_TTL_S)
    answer = {"Location": _upload_url(request, upload_id), "Upload-Expires": tus.http_date(upload.expires)}
    if with_body or length == 0:
        async with uploads.locked(upload_id) as token:
            upload = await _receive(request, upload, token, checksum) if with_body else upload
            await _complete_if_due(request, upload, token)
        answer["Upload-Offset"] = str(upload.offset)
    return web.Response(status=201, headers=tus.headers(**answer))


async def _replayed_creation(request: web.Request, who: Principal, earlier: str) -> web.Response:
    if earlier.startswith(writes.PENDING):
        raise writes.key_in_use()
    upload = await _owned(request, who, earlier, allow_expired=True)
    return web.Response(
        status=201,
        headers=tus.headers(Location=_upload_url(request, upload.id), **{"Upload-Offset": str(upload.offset)}),
    )


def _upload_id(request: web.Request) -> str:
    try:
        upload_id = str(uuid.UUID(request.match_info["id"]))
    except ValueError:
        raise tus.tus_error("not_found", "upload not found", 404) from None
    logs.bind(job_id=upload_id)
    return upload_id


async def _owned(request: web.Request, who: Principal, upload_id: str, *, allow_expired: bool = False) -> TusUpload:
    """The caller's upload: 404 for an unknown one or another account's; 410 once it has expired."""
    upload = await request.app[UPLOADS].get(upload_id)
    if upload is None or upload.account_id != who.account_id:
        raise tus.tus_error("not_found", "upload not found", 404)
    if not allow_expired and not upload.done and upload.expires < time.time():
        raise tus.tus_error("upload_expired", "the upload expired; create a new one", 410)
    return upload


@_tus
async def head(request: web.Request) -> web.Response:
    tus.check_resumable(request.headers.get("Tus-Resumable"))
    who = await principal(request, WRITE)
    upload = await _owned(request, who, _upload_id(request))
    if not upload.done and upload.offset == upload.length:  # its last request died finishing it
        with contextlib.suppress(Locked):
            async with request.app[UPLOADS].locked(upload.id) as token:
                upload = await _owned(request, who, upload.id)
                await _complete_if_due(request, upload, token)
    answer = {
        "Upload-Offset": str(upload.offset),
        "Upload-Length": str(upload.length),
        "Cache-Control": "no-store",
    }
    if upload.metadata:
        answer["Upload-Metadata"] = tus.encode_metadata(upload.metadata)
    if not upload.done:
        answer["Upload-Expires"] = tus.http_date(upload.expires)
    return web.Response(status=200, headers=tus.headers(**answer))


@_tus
async def patch(request: web.Request) -> web.Response:
    tus.check_resumable(request.headers.get("Tus-Resumable"))
    who = await principal(request, WRITE)
    upload_id = _upload_id(request)
    await _owned(request, who, upload_id)
    if request.content_type != tus.OFFSET_CONTENT_TYPE:
        raise tus.bad_content_type()
    offset = tus.parse_offset(request.headers.get("Upload-Offset"))
    checksum = tus.parse_checksum(request.headers.get("Upload-Checksum"))
    async with request.app[UPLOADS].locked(upload_id) as token:
        upload = await _owned(request, who, upload_id)  # as it is now that this request holds it
        if offset != upload.offset or upload.done:
            raise tus.offset_conflict(upload.offset)
        upload = await _receive(request, upload, token, checksum)
        await _complete_if_due(request, upload, token)
    answer = {"Upload-Offset": str(upload.offset)}
    if not upload.done:
        answer["Upload-Expires"] = tus.http_date(upload.expires)
    return web.Response(status=204, headers=tus.headers(**answer))


@_tus
async def terminate(request: web.Request) -> web.Response:
    """``termination``: the upload and every byte it stored go (its S3 multipart upload is aborted)."""
    tus.check_resumable(request.headers.get("Tus-Resumable"))
    who = await principal(request, WRITE)
    upload_id = _upload_id(request)
    await _owned(request, who, upload_id, allow_expired=True)
    async with request.app[UPLOADS].locked(upload_id):
        upload = await _owned(request, who, upload_id, allow_expired=True)
        if upload.done:
            raise tus.tus_error(
                "upload_complete",
                f"the upload is complete: it is attachment {upload.id} (DELETE /v1/attachments/{upload.id})",
                409,
            )
        await discard(request.app[STORAGE], upload)
        await request.app[UPLOADS].delete(upload_id)
    return web.Response(status=204, headers=tus.headers())


async def discard(store: storage.Storage, upload: TusUpload) -> None:
    """Every byte an unfinished upload stored."""
    await store.abort(upload.write)
    await store.delete_prefix(storage.staging_prefix(upload.id))


class _Body:
    """A PATCH's bytes as they arrive, at most ``limit`` of them (more is a 413), hashed when a checksum is
    to be checked. A client that goes away, or sends too slowly for ATTACHD_BODY_READ_TIMEOUT_S, just ends
    the stream (``cut``): what arrived until then is kept, as tus has it, unless a checksum must cover it."""

    def __init__(self, request: web.Request, limit: int, checksum: tus.Checksum | None) -> None:
        self._content = request.content
        self._limit = limit
        self._deadline = asyncio.get_running_loop().time() + request.app[SETTINGS].body_read_timeout_s
        self.hasher = None if checksum is None else checksum.new_hasher()
        self.cut: str | None = None  # "gone" or "timeout"
        self.received = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout_at(self._deadline):
                    chunk, end_of_http_chunk = await self._content.readchunk()
            except TimeoutError:
                self.cut = "timeout"
                return
            except (ConnectionError, web.RequestPayloadError):
                self.cut = "gone"
                return
            if not chunk:
                if end_of_http_chunk:
                    continue
                if self._content.exception() is not None:  # the connection closed mid-body
                    self.cut = "gone"
                return
            self.received += len(chunk)
            if self.received > self._limit:
                raise tus.too_long_chunk(self._limit)
            if self.hasher is not None:
                self.hasher.update(chunk)
            yield chunk


async def _receive(request: web.Request, upload: TusUpload, token: str, checksum: tus.Checksum | None) -> TusUpload:
    """Store the request's bytes at the upload's offset; the upload as saved after them."""
    remaining = upload.length - upload.offset
    if request.content_length is not None and request.content_length > remaining:
        raise tus.too_long_chunk(remaining)
    uploads, settings = request.app[UPLOADS], request.app[SETTINGS]
    progress = upload

    async def checkpoint(write: storage.Resumable) -> None:
        nonlocal progress
        progress = msgspec.structs.replace(progress, write=write, expires=time.time() + settings.tus_expiry_s)
        await uploads.save(progress, token)

    body = _Body(request, remaining, checksum)
    store = request.app[STORAGE]
    # With a checksum, nothing counts until the whole chunk is checked: no checkpoint on the way.
    write = await store.append(upload.write, body.chunks(), None if checksum else checkpoint)
    if checksum is not None and (body.cut or body.hasher is None or body.hasher.digest() != checksum.digest):
        # Dropped: the saved offset is unchanged, and the next PATCH overwrites what this one stored.
        await _drop_tail(store, write, keep=upload.write)
        raise _cut(body.cut) if body.cut else tus.checksum_mismatch()
    progress = msgspec.structs.replace(progress, write=write, expires=time.time() + settings.tus_expiry_s)
    await uploads.save(progress, token)
    await _drop_tail(store, upload.write, keep=write)
    if body.cut == "timeout":
        raise _cut(body.cut, progress.offset)
    return progress


async def _drop_tail(store: storage.Storage, write: storage.Resumable, *, keep: storage.Resumable) -> None:
    """Delete a tail object (S3) no saved state names any more; best effort: the upload's end takes it anyway."""
    if write.tail_key is not None and write.tail_key != keep.tail_key:
        with contextlib.suppress(Exception):
            await store.delete(write.tail_key)


def _cut(how: str, offset: int | None = None) -> ApiError:
    more: dict[str, Any] = {} if offset is None else {"Upload-Offset": str(offset)}
    if how == "timeout":
        return tus.tus_error("request_timeout", "the chunk arrived too slowly; HEAD the upload and resume", 408, **more)
    return tus.tus_error("client_closed", "the connection closed mid-chunk", 400, **more)


async def _complete_if_due(request: web.Request, upload: TusUpload, token: str) -> None:
    """Once every byte is stored: the object assembled, then the ingest job queued, as a native create's is
    (manifest first, so the sweeper re-drives it if Redis loses it). Safe to run again if a process dies
    half-way (the next HEAD does): assembling twice changes nothing and the job id is the upload's."""
    if upload.done or upload.offset != upload.length:
        return
    await request.app[STORAGE].finish(upload.write)
    job = IngestJob(
        job_id=upload.id,
        account_id=upload.account_id,
        actor=upload.actor,
        request_id=request_id(request),
        mode="atomic",
        many=False,
        max_file_bytes=upload.max_file_bytes,
        items=[
            IngestItem(
                id=uuid.UUID(upload.id),
                fields=upload.fields,
                source=StagedSource(key=upload.write.key, filename=upload.metadata.get("filename"), size=upload.length),
            )
        ],
    )
    await writes.submit(request, job, manifest=True)
    upload.done = True
    await request.app[UPLOADS].save(upload, token)
