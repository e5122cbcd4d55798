"""Streaming multipart/form-data into staging storage, part by part, chunk by chunk.

A file part is written to its staging key as it arrives; a part that grows
past the per-file limit is cut off, its partial bytes deleted and the rest of
it drained, and it is reported as that file's error so that ``partial`` mode
can still keep the other files.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import BodyPartReader, MultipartReader, web

from services.core import storage
from services.core.errors import ApiError, bad_request
from services.core.storage import SizeLimitExceeded, Storage

CHUNK = 1 << 20
MAX_FIELDS = 200
MAX_FIELD_BYTES = 64 * 1024
FILE_FIELD_NAMES = frozenset({"file", "files", "file[]", "files[]"})


@dataclass
class FilePart:
    index: int
    filename: str | None
    content_type: str | None
    key: str | None = None
    size: int = 0
    error: ApiError | None = None


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[FilePart] = field(default_factory=list)


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def _drain(part: BodyPartReader) -> None:
    while await part.read_chunk(CHUNK):
        pass


def _is_file(part: BodyPartReader) -> bool:
    return part.filename is not None or part.name in FILE_FIELD_NAMES or (part.name or "").startswith("files[")


async def read_form(request: web.Request, store: Storage, upload_id: str, *, max_file_bytes: int,
                    max_files: int) -> Form:
    """Stage every file part and collect the text fields; on any error, nothing stays staged."""
    form = Form()
    try:
        reader: MultipartReader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, MultipartReader):
                raise bad_request("invalid_multipart", "nested multipart bodies are not supported", "file")
            if _is_file(part):
                await _stage_file(part, form, store, upload_id, max_file_bytes, max_files)
            else:
                await _read_field(part, form)
    except BaseException:
        with contextlib.suppress(Exception):
            await store.delete_prefix(storage.staging_prefix(upload_id))
        raise
    return form


async def _stage_file(part: BodyPartReader, form: Form, store: Storage, upload_id: str,
                      max_file_bytes: int, max_files: int) -> None:
    if len(form.files) >= max_files:
        raise bad_request("too_many_files", f"at most {max_files} files per request", "file")
    item = FilePart(index=len(form.files), filename=part.filename,
                    content_type=part.headers.get("Content-Type"))
    form.files.append(item)
    key = storage.staged_key(upload_id, item.index)
    try:
        item.size = await store.write_stream(key, _chunks(part), limit=max_file_bytes)
        item.key = key
    except SizeLimitExceeded:
        await _drain(part)
        item.error = ApiError("size_exceeded", f"{part.filename or 'the file'} is larger than the limit of "
                              f"{max_file_bytes} bytes", field="file", status=413)


async def _read_field(part: BodyPartReader, form: Form) -> None:
    name = part.name
    if not name:
        raise bad_request("invalid_multipart", "every form field needs a name", None)
    if len(form.fields) >= MAX_FIELDS:
        raise bad_request("too_many_fields", f"at most {MAX_FIELDS} form fields", name)
    raw = bytearray()
    while chunk := await part.read_chunk(MAX_FIELD_BYTES):
        raw += chunk
        if len(raw) > MAX_FIELD_BYTES:
            raise bad_request("field_too_long", f"{name} is longer than {MAX_FIELD_BYTES} bytes", name)
    try:
        form.fields[name] = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("invalid_value", f"{name} is not valid UTF-8", name) from None
