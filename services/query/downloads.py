"""Serving stored bytes: bearer-authenticated and signed-link downloads, with Range and ETag.

Only raster images may be shown inline; everything else is an attachment, and
active content (HTML, SVG, XML, scripts) is never labelled as what it is
(:mod:`services.core.mediatypes` decides both). Every response carries
``nosniff`` and a sandboxing CSP.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from services.core import listing, logs, ranges, repository, signing
from services.core.auth import READ
from services.core.errors import ApiError, not_found
from services.core.filenames import content_disposition
from services.core.mediatypes import OCTET_STREAM, VARIANT_EXTENSION, VARIANT_TYPE, disposition, served_content_type
from services.query.handlers import attachment_id
from services.web.engines import POOL, STORAGE
from services.web.http import SETTINGS, principal

VARIANTS = ("original", "thumbnail", "small")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Cross-Origin-Resource-Policy": "same-site",
}


def _variant(request: web.Request) -> str:
    variant = request.match_info.get("variant", "original")
    if variant not in VARIANTS:
        raise not_found("file variant")
    return variant


async def by_bearer(request: web.Request) -> web.StreamResponse:
    who = await principal(request, READ)
    download = _download(request)
    async with request.app[POOL].acquire() as conn:
        row = await repository.get_attachment(conn, who.account_id, attachment_id(request))
    if row is None:
        raise not_found()
    return await serve(request, row, _variant(request), download=download)


async def by_signed_link(request: web.Request) -> web.StreamResponse:
    variant = _variant(request)
    try:
        ident = uuid.UUID(request.match_info["id"])
    except ValueError:
        raise not_found() from None
    logs.bind(attachment_id=str(ident))
    signing.verify(
        request.app[SETTINGS].link_secret,
        str(ident),
        variant,
        request.query.get("expires"),
        request.query.get("signature"),
        now=time.time(),
    )
    download = _download(request)
    async with request.app[POOL].acquire() as conn:
        row = await repository.get_for_download(conn, ident)
    if row is None:
        raise not_found()
    logs.bind(account=row["account_id"])
    return await serve(request, row, variant, download=download)


def _object(row: Mapping[str, Any], variant: str) -> tuple[str, int, str, str]:
    """The storage key, size, content type and ETag of one variant."""
    if not row["storage_key"]:
        raise ApiError("no_file", "this attachment is a link and has no stored file", status=404)
    if variant == "original":
        content_type = row["content_type"] or OCTET_STREAM
        return row["storage_key"], row["size"], content_type, f'"{row["sha256"]}"'
    stored = (row["variants"] or {}).get(variant)
    if not stored:
        raise ApiError("no_variant", f"this attachment has no {variant} (it is not a transformable image)", status=404)
    return stored["key"], stored["size"], VARIANT_TYPE, f'"{row["sha256"]}-{variant}"'


def _download(request: web.Request) -> bool:
    """``?download=true``: the file is to be saved, not shown, whatever its type."""
    return listing.parse_bool(request.query.get("download"), "download")


async def serve(
    request: web.Request, row: Mapping[str, Any], variant: str, *, download: bool = False
) -> web.StreamResponse:
    key, size, content_type, etag = _object(row, variant)
    filename = row["filename"] or "file"
    if variant != "original":
        filename = f"{filename.rsplit('.', 1)[0]}-{variant}.{VARIANT_EXTENSION}"
    headers = {
        **SECURITY_HEADERS,
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=86400, immutable",
        "Content-Disposition": content_disposition("attachment" if download else disposition(content_type), filename),
    }
    if ranges.etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = served_content_type(content_type)

    span = None
    if ranges.if_range_matches(request.headers.get("If-Range"), etag):
        span = ranges.parse_range(request.headers.get("Range"), size)
    if span is None:
        start, end, status = 0, size - 1, 200
    else:
        (start, end), status = span, 206
        headers["Content-Range"] = ranges.content_range(start, end, size)
    headers["Content-Length"] = str(end - start + 1 if size else 0)

    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    if request.method != "HEAD" and size:
        async for chunk in request.app[STORAGE].read(key, start, end):
            await response.write(chunk)
    await response.write_eof()
    return response
