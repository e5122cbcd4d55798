"""The Python client of attachd's native API: :class:`AsyncClient` (aiohttp) and :class:`Client`, the same
calls for code without an event loop (the async client run on a private loop in a thread of its own).

::

    async with AsyncClient("http://127.0.0.1:8080", token) as attachd:
        record = await attachd.upload("site-visit.jpg", Target("Task", "42"), name="Site visit")
        async for attachment in attachd.list(Target("Task", "42"), order_by="-created_at"):
            print(attachment.name, attachment.size)

Every refusal is raised as the typed exception of attachd_client.errors (``NotFound``, ``BadRequest``
with its ``code`` and ``field``...).
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
import msgspec

from attachd_client import errors, tus
from attachd_client.models import Attachment, Count, Page, Target, UploadStatus
from attachd_client.retries import repeatable, retrying
from attachd_client.streams import PIECE, AtomicFile, Pacer, Progress, SizedStream, file_in_pieces
from attachd_client.transport import Transport

T = TypeVar("T")
FieldValue = str | int | bool
Answer = tuple[int, Mapping[str, str], bytes]  # an HTTP answer's status, headers and body
# Outside the classes: their method `list` would shadow the builtin in their annotations.
FilterTree = list[dict[str, Any]]
FieldNames = list[str]
DEFAULT_TUS_THRESHOLD = 8 * 1024 * 1024  # smaller files go in one multipart request


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


def form_value(value: FieldValue) -> str:
    """A create field as a form field or tus metadata value: text, with booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def create_fields(target: Target | None, name: str | None, fields: Mapping[str, FieldValue] | None) -> dict[str, Any]:
    """The create fields of an upload: its target, its name, and any other (``display_order``, ``status``...)."""
    body: dict[str, Any] = dict(fields or {})
    if target is not None:
        body.update(target_type=target.type, target_id=target.id)
    if name is not None:
        body["name"] = name
    return body


def list_params(
    target: Target | None,
    *,
    descendants: bool | None = None,
    ancestor: Target | None = None,
    versions: str | None = None,
    include_canceled: bool | None = None,
    available: bool | None = None,
    order_by: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, str]:
    """The query string of a list or count: only what is given."""
    given: dict[str, Any] = {
        "descendants": descendants,
        "ancestor": str(ancestor) if ancestor else None,
        "versions": versions,
        "include_canceled": include_canceled,
        "available": available,
        "order_by": order_by,
        "limit": limit,
        "cursor": cursor,
    }
    if target is not None:
        given.update(target_type=target.type, target_id=target.id)
    return {key: form_value(value) for key, value in given.items() if value is not None}


class AsyncClient:
    """One attachd, at ``url`` (``http://host:port``, what ``ATTACHD_URL`` holds), with a bearer token (a
    JWT or an API key). Files up to ``tus_threshold`` bytes are uploaded in one multipart request, larger
    ones over tus in ``chunk_size`` chunks, resuming after a failure."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        tus_threshold: int = DEFAULT_TUS_THRESHOLD,
        chunk_size: int = tus.DEFAULT_CHUNK,
        retries: int = tus.DEFAULT_RETRIES,
        timeout: aiohttp.ClientTimeout | None = None,
        upload_wait_s: float = 300.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.tus_threshold = tus_threshold
        self.chunk_size = chunk_size
        self.retries = retries
        self.upload_wait_s = upload_wait_s
        # No overall deadline (an upload takes what it takes), but a stalled connection is a failure.
        timeout = timeout or aiohttp.ClientTimeout(total=None, connect=30, sock_read=300)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._http = Transport(self.url, token, self._session)
        self._tus = tus.TusClient(self._http)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    @property
    def resumable(self) -> tus.TusClient:
        """The tus protocol's calls one by one (create, offset, send, terminate), for uploads driven by hand."""
        return self._tus

    # -- uploads -------------------------------------------------------------------------------------------

    async def upload(
        self,
        path: str | os.PathLike[str],
        target: Target | None,
        *,
        name: str | None = None,
        fields: Mapping[str, FieldValue] | None = None,
        progress: Progress | None = None,
        resume_url: str | None = None,
        on_resumable: Callable[[str], None] | None = None,
        rate: int | None = None,
    ) -> Attachment:
        """Upload the file at ``path``; its record once attachd has committed it. Over ``tus_threshold``
        bytes it goes over tus: ``resume_url`` resumes an upload begun earlier, ``on_resumable`` is told a
        new upload's URL before its first byte. ``progress`` is told the bytes sent so far; ``rate`` caps
        them per second."""
        path = Path(path)
        size = path.stat().st_size
        values = create_fields(target, name, fields)
        if resume_url is None and size <= self.tus_threshold:
            return await self._multipart(path, size, values, progress, rate)
        metadata = {key: form_value(value) for key, value in values.items()}
        metadata.setdefault("filename", path.name)
        url = await tus.upload_file(
            self._tus,
            path,
            metadata,
            url=resume_url,
            on_created=on_resumable,
            progress=progress,
            chunk_size=self.chunk_size,
            retries=self.retries,
            rate=rate,
        )
        return await self.wait_for_upload(tus.upload_id(url))

    async def _multipart(
        self, path: Path, size: int, values: Mapping[str, Any], progress: Progress | None, rate: int | None
    ) -> Attachment:
        def form() -> aiohttp.MultipartWriter:  # one per attempt: a stream is read once
            writer = aiohttp.MultipartWriter("form-data")
            for key, value in values.items():
                writer.append(form_value(value)).set_content_disposition("form-data", name=key)
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            stream = SizedStream(file_in_pieces(path, progress, Pacer(rate)), size, content_type=content_type)
            writer.append_payload(stream).set_content_disposition("form-data", name="file", filename=path.name)
            return writer

        return await self._create(form=form)

    async def _create(
        self, *, json: dict[str, Any] | None = None, form: Callable[[], aiohttp.MultipartWriter] | None = None
    ) -> Attachment:
        """Send a create, and send it again with the same Idempotency-Key after a failure a retry may cure:
        attachd answers a retry with the first request's outcome if that one got through, so nothing is
        uploaded twice."""
        headers = {"Idempotency-Key": str(uuid.uuid4())}

        async def send() -> Answer:
            data = form() if form is not None else None
            return await self._http.call("POST", "/v1/attachments", json=json, data=data, headers=headers)

        return await self._created(await retrying(send, repeatable, self.retries))

    async def upload_base64(
        self,
        data: bytes,
        target: Target | None,
        *,
        filename: str,
        name: str | None = None,
        fields: Mapping[str, FieldValue] | None = None,
    ) -> Attachment:
        """Upload bytes held in memory, sent as base64 in a JSON body."""
        body = create_fields(target, name, fields)
        body.update(filename=filename, data=base64.b64encode(data).decode("ascii"))
        return await self._create(json=body)

    async def upload_url(
        self,
        url: str,
        target: Target | None,
        *,
        name: str | None = None,
        attachment_type: str | None = None,
        fields: Mapping[str, FieldValue] | None = None,
    ) -> Attachment:
        """attachd fetches the file at ``url`` (or, with ``attachment_type`` ``URL``, ``FILE_LINK`` or
        ``FOLDER_LINK``, keeps the link without fetching it)."""
        body = create_fields(target, name, fields)
        body["url"] = url
        if attachment_type is not None:
            body["attachment_type"] = attachment_type
        return await self._create(json=body)

    async def _created(self, answer: Answer) -> Attachment:
        """The record a create answered with, or, when attachd answered before its job finished (202), the
        record its status URL reports once it does."""
        status, _, body = answer
        if status == 202:
            return await self.wait_for_upload(msgspec.json.decode(body, type=UploadStatus).id)
        return msgspec.json.decode(body, type=Attachment)

    async def upload_status(self, upload_id: str) -> UploadStatus:
        _, _, body = await self._http.call("GET", f"/v1/uploads/{upload_id}")
        return msgspec.json.decode(body, type=UploadStatus)

    async def wait_for_upload(self, upload_id: str, timeout_s: float | None = None) -> Attachment:
        """The record of an accepted write once its job has committed it; a refused one is raised as
        :class:`~attachd_client.errors.UploadFailed` with the job's code and field."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.upload_wait_s if timeout_s is None else timeout_s)
        pause = 0.05
        while True:
            status = await self.upload_status(upload_id)
            if status.status == "failed":
                raise errors.upload_failed(status.error or {})
            if status.status == "complete":
                record = status.attachment or (status.attachments[0] if status.attachments else None)
                if record is None:
                    raise errors.AttachdError("protocol_error", f"upload {upload_id} is complete without a record")
                return record
            if loop.time() > deadline:
                raise errors.AttachdError("timeout", f"upload {upload_id} is still {status.status}")
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)

    async def terminate_upload(self, resume_url: str) -> None:
        """Drop a resumable upload that will not be finished, with the bytes it stored."""
        await self._tus.terminate(resume_url)

    # -- reads ---------------------------------------------------------------------------------------------

    async def list_page(
        self, target: Target | None = None, *, cursor: str | None = None, limit: int | None = None, **filters: Any
    ) -> Page:
        """One page of a list (``filters``: descendants, ancestor, versions, include_canceled, available,
        order_by); ``next_cursor`` asks for the next."""
        params = list_params(target, cursor=cursor, limit=limit, **filters)
        _, _, body = await self._http.call("GET", "/v1/attachments", params=params)
        return msgspec.json.decode(body, type=Page)

    async def list(
        self,
        target: Target | None = None,
        *,
        descendants: bool | None = None,
        ancestor: Target | None = None,
        versions: str | None = None,
        include_canceled: bool | None = None,
        available: bool | None = None,
        order_by: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Attachment]:
        """Every attachment the filters select, page after page."""
        cursor: str | None = None
        while True:
            page = await self.list_page(
                target,
                cursor=cursor,
                limit=page_size,
                descendants=descendants,
                ancestor=ancestor,
                versions=versions,
                include_canceled=include_canceled,
                available=available,
                order_by=order_by,
            )
            for attachment in page.attachments:
                yield attachment
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def count(
        self,
        target: Target | None = None,
        *,
        descendants: bool | None = None,
        ancestor: Target | None = None,
        versions: str | None = None,
        include_canceled: bool | None = None,
        available: bool | None = None,
    ) -> int:
        params = list_params(
            target,
            descendants=descendants,
            ancestor=ancestor,
            versions=versions,
            include_canceled=include_canceled,
            available=available,
        )
        _, _, body = await self._http.call("GET", "/v1/attachments/count", params=params)
        return msgspec.json.decode(body, type=Count).count

    async def get(self, attachment_id: str | int, *, include_canceled: bool = False) -> Attachment:
        """One attachment, by its id or its integer id (``seq``)."""
        params = {"include_canceled": "true"} if include_canceled else None
        _, _, body = await self._http.call("GET", f"/v1/attachments/{attachment_id}", params=params)
        return msgspec.json.decode(body, type=Attachment)

    async def query(
        self,
        filter: FilterTree,
        *,
        include_fields: FieldNames | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Attachment]:
        """Every attachment a filter tree selects (``[{"field": "name", "op": "beginsWith", "value":
        "invoice"}, {"op": "or", "items": [...]}]``), page after page."""
        request: dict[str, Any] = {"filter": filter}
        if include_fields is not None:
            request["include_fields"] = include_fields
        if page_size is not None:
            request["max_records"] = page_size
        while True:
            _, _, body = await self._http.call("POST", "/v1/attachments/query", json=request)
            page = msgspec.json.decode(body, type=Page)
            for attachment in page.attachments:
                yield attachment
            if page.next_cursor is None:
                return
            request["cursor"] = page.next_cursor

    async def query_count(self, filter: FilterTree) -> int:
        _, _, body = await self._http.call("POST", "/v1/attachments/query/count", json={"filter": filter})
        return msgspec.json.decode(body, type=Count).count

    async def iter_file(self, attachment_id: str | int, variant: str | None = None) -> AsyncIterator[bytes]:
        """The bytes of an attachment's file (``variant``: ``thumbnail`` or ``small``), as they arrive."""
        async with self._http.open("GET", _file_path(attachment_id, variant)) as response:
            async for chunk in response.content.iter_chunked(PIECE):
                yield chunk

    async def download(
        self,
        attachment_id: str | int,
        dest: str | os.PathLike[str],
        *,
        variant: str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Save an attachment's file at ``dest``, which appears only once the file is whole (written beside
        it under a temporary name first). The original's bytes are checked against its SHA-256."""
        dest = Path(dest)
        async with self._http.open("GET", _file_path(attachment_id, variant)) as response:
            expected = response.headers.get("ETag", "").strip('"') if variant is None else ""
            with AtomicFile(dest) as file:
                async for chunk in response.content.iter_chunked(PIECE):
                    await asyncio.to_thread(file.write, chunk)
                    if progress is not None:
                        progress(file.size)
                if expected and file.sha256 != expected:
                    raise errors.AttachdError("checksum_mismatch", f"the download's sha256 is not {expected}")
        return dest

    # -- changes -------------------------------------------------------------------------------------------

    async def change(
        self,
        attachment_id: str | int,
        *,
        name: str | _Unset = UNSET,
        display_order: int | _Unset = UNSET,
        available: bool | _Unset = UNSET,
        status: str | _Unset | None = UNSET,
    ) -> Attachment:
        """Change what is given (``status=None`` clears the status); the record as it is then."""
        given = {"name": name, "display_order": display_order, "available": available, "status": status}
        changes = {key: value for key, value in given.items() if value is not UNSET}
        answer = await self._http.call("PATCH", f"/v1/attachments/{attachment_id}", json=changes)
        return await self._created(answer)

    async def delete(self, attachment_id: str | int) -> None:
        """Delete an attachment (attachd keeps the row, canceled, and hides it from reads)."""
        status, _, body = await self._http.call("DELETE", f"/v1/attachments/{attachment_id}")
        if status == 202:
            await self._finished(msgspec.json.decode(body, type=UploadStatus).id)

    async def _finished(self, job_id: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.upload_wait_s
        while not (status := await self.upload_status(job_id)).finished:
            if loop.time() > deadline:
                raise errors.AttachdError("timeout", f"job {job_id} is still {status.status}")
            await asyncio.sleep(0.1)
        if status.status == "failed":
            raise errors.upload_failed(status.error or {})


def _file_path(attachment_id: str | int, variant: str | None) -> str:
    return f"/v1/attachments/{attachment_id}/file" + (f"/{variant}" if variant else "")


class Client:
    """The calls of :class:`AsyncClient` for code without an event loop. ``close()`` it (or use ``with``)."""

    def __init__(self, url: str, token: str | None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="attachd-client", daemon=True)
        self._thread.start()
        self._async: AsyncClient = self._run(self._open(url, token, options))

    @staticmethod
    async def _open(url: str, token: str | None, options: dict[str, Any]) -> AsyncClient:
        return AsyncClient(url, token, **options)  # its session belongs to the loop it is made on

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> tuple[bool, T | None]:
            try:
                return True, await anext(items)
            except StopAsyncIteration:
                return False, None

        while True:
            more, item = self._run(step())
            if not more:
                return
            yield item  # type: ignore[misc]  # an item whenever there is more

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    # The calls run on the client's own thread: ``progress`` and ``on_resumable`` are called there.

    def upload(
        self,
        path: str | os.PathLike[str],
        target: Target | None,
        *,
        name: str | None = None,
        fields: Mapping[str, FieldValue] | None = None,
        progress: Progress | None = None,
        resume_url: str | None = None,
        on_resumable: Callable[[str], None] | None = None,
        rate: int | None = None,
    ) -> Attachment:
        return self._run(
            self._async.upload(
                path,
                target,
                name=name,
                fields=fields,
                progress=progress,
                resume_url=resume_url,
                on_resumable=on_resumable,
                rate=rate,
            )
        )

    def upload_base64(
        self,
        data: bytes,
        target: Target | None,
        *,
        filename: str,
        name: str | None = None,
        fields: Mapping[str, FieldValue] | None = None,
    ) -> Attachment:
        return self._run(self._async.upload_base64(data, target, filename=filename, name=name, fields=fields))

    def upload_url(
        self,
        url: str,
        target: Target | None,
        *,
        name: str | None = None,
        attachment_type: str | None = None,
        fields: Mapping[str, FieldValue] | None = None,
    ) -> Attachment:
        return self._run(self._async.upload_url(url, target, name=name, attachment_type=attachment_type, fields=fields))

    def upload_status(self, upload_id: str) -> UploadStatus:
        return self._run(self._async.upload_status(upload_id))

    def wait_for_upload(self, upload_id: str, timeout_s: float | None = None) -> Attachment:
        return self._run(self._async.wait_for_upload(upload_id, timeout_s))

    def terminate_upload(self, resume_url: str) -> None:
        self._run(self._async.terminate_upload(resume_url))

    def list_page(
        self, target: Target | None = None, *, cursor: str | None = None, limit: int | None = None, **filters: Any
    ) -> Page:
        return self._run(self._async.list_page(target, cursor=cursor, limit=limit, **filters))

    def list(
        self,
        target: Target | None = None,
        *,
        descendants: bool | None = None,
        ancestor: Target | None = None,
        versions: str | None = None,
        include_canceled: bool | None = None,
        available: bool | None = None,
        order_by: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Attachment]:
        return self._iterate(
            self._async.list(
                target,
                descendants=descendants,
                ancestor=ancestor,
                versions=versions,
                include_canceled=include_canceled,
                available=available,
                order_by=order_by,
                page_size=page_size,
            )
        )

    def count(
        self,
        target: Target | None = None,
        *,
        descendants: bool | None = None,
        ancestor: Target | None = None,
        versions: str | None = None,
        include_canceled: bool | None = None,
        available: bool | None = None,
    ) -> int:
        return self._run(
            self._async.count(
                target,
                descendants=descendants,
                ancestor=ancestor,
                versions=versions,
                include_canceled=include_canceled,
                available=available,
            )
        )

    def get(self, attachment_id: str | int, *, include_canceled: bool = False) -> Attachment:
        return self._run(self._async.get(attachment_id, include_canceled=include_canceled))

    def query(
        self, filter: FilterTree, *, include_fields: FieldNames | None = None, page_size: int | None = None
    ) -> Iterator[Attachment]:
        return self._iterate(self._async.query(filter, include_fields=include_fields, page_size=page_size))

    def query_count(self, filter: FilterTree) -> int:
        return self._run(self._async.query_count(filter))

    def iter_file(self, attachment_id: str | int, variant: str | None = None) -> Iterator[bytes]:
        return self._iterate(self._async.iter_file(attachment_id, variant))

    def download(
        self,
        attachment_id: str | int,
        dest: str | os.PathLike[str],
        *,
        variant: str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        return self._run(self._async.download(attachment_id, dest, variant=variant, progress=progress))

    def change(
        self,
        attachment_id: str | int,
        *,
        name: str | _Unset = UNSET,
        display_order: int | _Unset = UNSET,
        available: bool | _Unset = UNSET,
        status: str | _Unset | None = UNSET,
    ) -> Attachment:
        return self._run(
            self._async.change(
                attachment_id, name=name, display_order=display_order, available=available, status=status
            )
        )

    def delete(self, attachment_id: str | int) -> None:
        self._run(self._async.delete(attachment_id))
