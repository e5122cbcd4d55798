"""Streaming multipart/form-data into staging storage, part by part, chunk by chunk.

A file part is written to its staging key as it arrives; a part that grows
past the per-file limit is cut off, its partial bytes deleted and the rest of
it drained, and it is reported as that file's error so that ``partial`` mode
can still keep the other files.

The body is parsed here rather than by aiohttp's ``MultipartReader``: that one
copies every chunk two or three times (it joins the previous chunk to the new
one to look for the boundary across the seam, and re-queues what it read past
it), which made parsing the most expensive thing the ingress did with a large
upload. This parser takes the chunks as the HTTP parser delivered them
(``StreamReader.readchunk``, no joins) and finds the delimiter with one
``bytes.find`` per chunk; a chunk goes on to storage as the very same object
unless the delimiter is in it or it ends with what may be the delimiter's
start. The part headers and the Content-Disposition parameters are read as
aiohttp reads them (its own ``parse_content_disposition``), with the common
plain form taken by a fast path.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.helpers import parse_mimetype
from aiohttp.multipart import content_disposition_filename, parse_content_disposition
from aiohttp.streams import StreamReader

from services.core import storage
from services.core.errors import ApiError, bad_request
from services.core.storage import SizeLimitExceeded, Storage

MAX_FIELDS = 200
MAX_FIELD_BYTES = 64 * 1024
MAX_HEADER_LINE = 8 * 1024  # one part header line, or the line after a delimiter
MAX_PART_HEADERS = 32  # header lines per part
MAX_BOUNDARY = 70  # RFC 2046
FILE_FIELD_NAMES = frozenset({"file", "files", "file[]", "files[]"})
_WHITESPACE = b" \t"


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


@dataclass(frozen=True)
class PartHeaders:
    name: str | None
    filename: str | None
    content_type: str | None


def _malformed(message: str) -> ApiError:
    return bad_request("invalid_multipart", message, None)


# --- Content-Disposition ---------------------------------------------------------------------------------

_PLAIN = re.compile(r'form-data; name="([^"\\/;][^"\\;]*)"(?:; filename="([^"\\/;%][^"\\;%]*)")?')


def disposition(header: str | None) -> tuple[str | None, str | None]:
    """The part's (name, filename), exactly as aiohttp's BodyPartReader.name and .filename give them."""
    if header is not None and (m := _PLAIN.fullmatch(header)):
        # Nothing in it that aiohttp would unescape, strip or decode: the quoted text is the value.
        return m.group(1), m.group(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # aiohttp warns on malformed headers; we answer from what it returns
        _, params = parse_content_disposition(header)
    return params.get("name"), content_disposition_filename(params, "filename")


def raw_disposition_filename(header: str) -> str | None:
    """The filename of a raw upload's ``Content-Disposition: attachment; filename=...`` (filename* too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, params = parse_content_disposition(header)
    return content_disposition_filename(params, "filename")


def boundary_of(content_type: str | None) -> bytes:
    params = parse_mimetype(content_type or "").parameters
    boundary = params.get("boundary", "")
    if not boundary:
        raise _malformed("the multipart Content-Type has no boundary")
    if len(boundary) > MAX_BOUNDARY:
        raise _malformed(f"the multipart boundary is longer than {MAX_BOUNDARY} characters")
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError:
        raise _malformed("the multipart boundary is not ASCII") from None


# --- the parser ------------------------------------------------------------------------------------------


class MultipartParser:
    """Reads a multipart body from a StreamReader: ``next_part()``, then ``chunks()`` or ``drain()`` of it.

    Invariant: ``self._buf[self._pos:]`` is unparsed body; the delimiter is ``CRLF--boundary`` (the CRLF
    before a delimiter belongs to it, RFC 2046). The body is read as if it began with CRLF, so a first
    delimiter at the very start is found like any other and a preamble before it is skipped.
    """

    def __init__(self, content: StreamReader, boundary: bytes) -> None:
        self._content = content
        self._delimiter = b"\r\n--" + boundary
        self._buf = b"\r\n"
        self._pos = 0
        self._started = False  # the preamble was skipped
        self._in_part = False  # between a part's headers and the delimiter that ends it
        self._done = False  # the close delimiter was read

    async def _read(self) -> bytes:
        """The next chunk as the HTTP parser delivered it (no joining); b"" at the end of the body."""
        while True:
            data, end_of_http_chunk = await self._content.readchunk()
            if data or not end_of_http_chunk:
                return data

    async def _more(self) -> None:
        """Append the next chunk to what is left unparsed (small: a header line, a partial delimiter)."""
        chunk = await self._read()
        if not chunk:
            raise _malformed("the multipart body ended before its closing boundary")
        rest = self._buf[self._pos :]
        self._buf = rest + chunk if rest else chunk
        self._pos = 0

    async def _line(self) -> bytes:
        while (end := self._buf.find(b"\r\n", self._pos)) < 0:
            if len(self._buf) - self._pos > MAX_HEADER_LINE:
                raise _malformed(f"a multipart header line is longer than {MAX_HEADER_LINE} bytes")
            await self._more()
        line = self._buf[self._pos : end]
        self._pos = end + 2
        if len(line) > MAX_HEADER_LINE:
            raise _malformed(f"a multipart header line is longer than {MAX_HEADER_LINE} bytes")
        return line

    async def next_part(self) -> PartHeaders | None:
        """Skip to the next part and read its headers; None after the closing delimiter."""
        if self._in_part:
            await self.drain()
        if self._done:
            return None
        if not self._started:  # skip the preamble, up to the first delimiter
            self._started = True
            async for _ in self._data():
                pass
        # Just past a delimiter: "--" closes the body, else optional padding and CRLF, then the headers.
        while len(self._buf) - self._pos < 2:
            await self._more()
        if self._buf.startswith(b"--", self._pos):
            self._done = True
            await self._drain_epilogue()
            return None
        if (await self._line()).strip(_WHITESPACE):  # transport padding (RFC 2046 5.1.1), nothing else
            raise _malformed("a multipart boundary is followed by something other than a line break")
        headers: dict[str, str] = {}
        for _ in range(MAX_PART_HEADERS + 1):
            line = await self._line()
            if not line:
                break
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise _malformed("a multipart part has a malformed header line")
            key = name.decode("ascii", "replace").lower()
            if key in headers and key in ("content-disposition", "content-type"):
                raise _malformed(f"a multipart part has two {key} headers")
            headers[key] = value.strip(_WHITESPACE).decode("utf-8", "replace")
        else:
            raise _malformed(f"a multipart part has more than {MAX_PART_HEADERS} header lines")
        self._in_part = True
        field_name, filename = disposition(headers.get("content-disposition"))
        return PartHeaders(field_name, filename, headers.get("content-type"))

    def _partial_at_end(self, buf: bytes, start: int) -> int:
        """Where, at or after ``start``, ``buf``'s tail may be the start of a delimiter; len(buf) if nowhere."""
        delimiter = self._delimiter
        p = buf.find(b"\r", max(start, len(buf) - len(delimiter) + 1))
        while p >= 0:
            if delimiter.startswith(buf[p:]):
                return p
            p = buf.find(b"\r", p + 1)
        return len(buf)

    async def _data(self) -> AsyncIterator[bytes]:
        """The bytes up to the next delimiter, left positioned just past it.

        The parser's state is updated before each yield, so a consumer that stops early (a file over its
        limit) leaves it where ``drain()`` can go on from.
        """
        delimiter = self._delimiter
        while True:
            buf, pos = self._buf, self._pos
            end = buf.find(delimiter, pos)
            if end >= 0:
                self._pos = end + len(delimiter)
                self._in_part = False
                if end > pos:
                    yield buf[pos:end]
                return
            keep = self._partial_at_end(buf, pos)
            if keep > pos:
                self._pos = keep
                yield buf[pos:keep]  # the whole chunk, not a copy, when it is all data (the common case)
            chunk = await self._read()
            if not chunk:
                raise _malformed("the multipart body ended before its closing boundary")
            rest = buf[keep:]
            self._buf = rest + chunk if rest else chunk
            self._pos = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        """The current part's data, chunk by chunk."""
        if not self._in_part:
            return
        async for chunk in self._data():
            yield chunk

    async def drain(self) -> None:
        async for _ in self.chunks():
            pass

    async def _drain_epilogue(self) -> None:
        self._buf, self._pos = b"", 0
        while await self._read():
            pass


# --- the form --------------------------------------------------------------------------------------------


def _is_file(part: PartHeaders) -> bool:
    return part.filename is not None or part.name in FILE_FIELD_NAMES or (part.name or "").startswith("files[")


async def read_form(
    request: web.Request, store: Storage, upload_id: str, *, max_file_bytes: int, max_files: int
) -> Form:
    """Stage every file part and collect the text fields; on any error, nothing stays staged."""
    form = Form()
    try:
        parser = MultipartParser(request.content, boundary_of(request.headers.get("Content-Type")))
        while (part := await parser.next_part()) is not None:
            if (part.content_type or "").lower().startswith("multipart/"):
                raise bad_request("invalid_multipart", "nested multipart bodies are not supported", "file")
            if _is_file(part):
                await _stage_file(parser, part, form, store, upload_id, max_file_bytes, max_files)
            else:
                await _read_field(parser, part, form)
    except BaseException:
        with contextlib.suppress(Exception):
            await store.delete_prefix(storage.staging_prefix(upload_id))
        raise
    return form


async def _stage_file(
    parser: MultipartParser,
    part: PartHeaders,
    form: Form,
    store: Storage,
    upload_id: str,
    max_file_bytes: int,
    max_files: int,
) -> None:
    if len(form.files) >= max_files:
        raise bad_request("too_many_files", f"at most {max_files} files per request", "file")
    item = FilePart(index=len(form.files), filename=part.filename, content_type=part.content_type)
    form.files.append(item)
    key = storage.staged_key(upload_id, item.index)
    try:
        item.size = await store.write_stream(key, parser.chunks(), limit=max_file_bytes)
        item.key = key
    except SizeLimitExceeded:
        await parser.drain()
        item.error = ApiError(
            "size_exceeded",
            f"{part.filename or 'the file'} is larger than the limit of {max_file_bytes} bytes",
            field="file",
            status=413,
        )


async def _read_field(parser: MultipartParser, part: PartHeaders, form: Form) -> None:
    name = part.name
    if not name:
        raise bad_request("invalid_multipart", "every form field needs a name", None)
    if len(form.fields) >= MAX_FIELDS:
        raise bad_request("too_many_fields", f"at most {MAX_FIELDS} form fields", name)
    raw = b""
    async for chunk in parser.chunks():
        raw += chunk
        if len(raw) > MAX_FIELD_BYTES:
            raise bad_request("field_too_long", f"{name} is longer than {MAX_FIELD_BYTES} bytes", name)
    try:
        form.fields[name] = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("invalid_value", f"{name} is not valid UTF-8", name) from None
