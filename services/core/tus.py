"""The rules of the tus 1.0 resumable upload protocol (https://tus.io/protocols/resumable-upload), as attachd
speaks it: its headers, its metadata and its checksums. Pure, no I/O; the handlers are services/ingress/tus.py.

attachd implements the core protocol and the ``creation``, ``creation-with-upload``, ``termination``,
``expiration`` and ``checksum`` extensions. An upload's ``Upload-Metadata`` carries the native create fields
(``target_type``, ``target_id``, ``name``, ``filename``...), checked by the native rules when it is created.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from services.core.contract import NewAttachment
from services.core.errors import ApiError
from services.core.filenames import extension_of
from services.core.sniff import check_extension
from services.core.validation import coerce_form, parse_new_attachment

VERSION = "1.0.0"
EXTENSIONS = ("creation", "creation-with-upload", "termination", "expiration", "checksum")
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
# Upload-Checksum algorithms, by the names the tus checksum extension uses (IANA's hash names).
CHECKSUMS: dict[str, Callable[[], Any]] = {"sha256": hashlib.sha256, "sha1": hashlib.sha1, "md5": hashlib.md5}
CHECKSUM_MISMATCH = 460  # the tus checksum extension's own status

# Names other tus clients give create fields: Uppy and tus-js-client send the MIME type as ``filetype``
# (Uppy also as ``type``) and a folder upload's path as ``relativePath``, which attachd does not keep.
ALIASES = {"filetype": "content_type", "type": "content_type"}
IGNORED = frozenset({"relativePath"})

_KEY = re.compile(r"[^\s,]+")
_DIGITS = re.compile(r"[0-9]{1,19}")
_HEADER_LIMIT = 16 * 1024  # longer than every create field together could need


def headers(**more: str) -> dict[str, str]:
    """What every tus response carries, and ``more``."""
    return {"Tus-Resumable": VERSION, **more}


def tus_error(code: str, message: str, status: int, field: str | None = None, **more: str) -> ApiError:
    return ApiError(code, message, field=field, status=status, headers=headers(**more))


def check_resumable(value: str | None) -> None:
    """Every request but OPTIONS names the protocol version it speaks; 412 for any but 1.0.0."""
    if value != VERSION:
        raise tus_error(
            "unsupported_tus_version",
            f"send Tus-Resumable: {VERSION} (the only version this server speaks)",
            412,
            "Tus-Resumable",
            **{"Tus-Version": VERSION},
        )


def parse_length(value: str | None) -> int:
    """``Upload-Length`` of a new upload: required, as deferred lengths are not supported (the account's file
    limit is held against it at admission, before anything is stored)."""
    if value is None:
        raise tus_error(
            "missing_header", "Upload-Length is required (Upload-Defer-Length is not supported)", 400, "Upload-Length"
        )
    return _non_negative(value, "Upload-Length")


def too_large(max_bytes: int) -> ApiError:
    return tus_error("size_exceeded", f"the upload is larger than the limit of {max_bytes} bytes", 413, "Upload-Length")


def parse_offset(value: str | None) -> int:
    if value is None:
        raise tus_error("missing_header", "Upload-Offset is required", 400, "Upload-Offset")
    return _non_negative(value, "Upload-Offset")


def _non_negative(value: str, name: str) -> int:
    if not _DIGITS.fullmatch(value.strip()):
        raise tus_error("invalid_header", f"{name} must be a non-negative integer", 400, name)
    return int(value)


def parse_metadata(value: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64(value)`` pairs (a key alone has the empty value).

    Keys are unique, with neither spaces nor commas; values are UTF-8 text once decoded.
    """
    if value is None or not value.strip():
        return {}
    if len(value) > _HEADER_LIMIT:
        raise tus_error(
            "too_long", f"Upload-Metadata is longer than {_HEADER_LIMIT} characters", 400, "Upload-Metadata"
        )
    pairs: dict[str, str] = {}
    for item in value.split(","):
        key, _, encoded = item.strip().partition(" ")
        encoded = encoded.strip()
        if not _KEY.fullmatch(key) or " " in encoded:
            raise tus_error(
                "invalid_metadata", "Upload-Metadata is key base64-value pairs, comma-separated", 400, "Upload-Metadata"
            )
        if key in pairs:
            raise tus_error("invalid_metadata", f"Upload-Metadata gives {key} twice", 400, "Upload-Metadata")
        try:
            pairs[key] = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise tus_error(
                "invalid_metadata", f"the value of {key} in Upload-Metadata is not base64-encoded UTF-8", 400, key
            ) from None
    return pairs


def encode_metadata(pairs: dict[str, str]) -> str:
    """The inverse of :func:`parse_metadata` (what a HEAD answers with)."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode('ascii')}" if v else k for k, v in pairs.items())


def create_fields(metadata: dict[str, str]) -> dict[str, str]:
    """The native create fields an upload's metadata names (other clients' names translated, paths dropped)."""
    fields: dict[str, str] = {}
    for key, value in metadata.items():
        if key in IGNORED:
            continue
        native = ALIASES.get(key, key)
        if native in fields and native != key:  # content_type itself wins over an alias
            continue
        fields[native] = value
    return fields


def new_attachment(metadata: dict[str, str]) -> NewAttachment:
    """The upload's create fields, by the rules a multipart form's follow; a bad one is a 400 naming it."""
    fields = coerce_form(create_fields(metadata))
    try:
        return parse_new_attachment(fields, has_file=True, filename_hint=metadata.get("filename"))
    except ApiError as exc:
        exc.headers = headers()
        raise


def check_named_extension(fields: NewAttachment, metadata: dict[str, str], allowed: frozenset[str]) -> None:
    """A file name given with an extension that is never allowed is refused at creation, not after its
    last byte (a name without an extension waits for the content, which may name one)."""
    name = fields.filename or metadata.get("filename")
    if name and (extension := extension_of(name)):
        try:
            check_extension(extension, allowed=allowed)
        except ApiError as exc:
            exc.headers = headers()
            raise


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes

    def new_hasher(self) -> Any:
        return CHECKSUMS[self.algorithm]()


def parse_checksum(value: str | None) -> Checksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``; an algorithm this server does not know is a 400."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise tus_error(
            "unsupported_checksum",
            f"Upload-Checksum's algorithm must be one of {', '.join(CHECKSUMS)}",
            400,
            "Upload-Checksum",
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        digest = b""
    if len(digest) != CHECKSUMS[algorithm]().digest_size:
        raise tus_error(
            "invalid_header", f"Upload-Checksum's {algorithm} digest is not base64 of its size", 400, "Upload-Checksum"
        )
    return Checksum(algorithm, digest)


def checksum_mismatch() -> ApiError:
    return tus_error(
        "checksum_mismatch",
        "the chunk's bytes do not match its Upload-Checksum; it was dropped (the offset is unchanged)",
        CHECKSUM_MISMATCH,
        "Upload-Checksum",
    )


def http_date(unix: float) -> str:
    """``Upload-Expires`` as HTTP writes dates (RFC 9110's IMF-fixdate)."""
    return formatdate(unix, usegmt=True)


def part_size(length: int, minimum: int, max_parts: int = 10_000) -> int:
    """Bytes per S3 part of an upload of ``length``: ``minimum``, or more when S3's part count would not do."""
    return max(minimum, -(-length // max_parts))


def offset_conflict(expected: int) -> ApiError:
    return tus_error(
        "offset_mismatch",
        f"Upload-Offset must be the upload's offset, {expected} (HEAD the upload for it)",
        409,
        "Upload-Offset",
        **{"Upload-Offset": str(expected)},
    )


def options_headers(max_bytes: int) -> dict[str, str]:
    """What ``OPTIONS`` answers: what this server speaks."""
    return headers(
        **{
            "Tus-Version": VERSION,
            "Tus-Extension": ",".join(EXTENSIONS),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
            "Tus-Max-Size": str(max_bytes),
        }
    )


def too_long_chunk(remaining: int) -> ApiError:
    return tus_error(
        "size_exceeded", f"the chunk goes past the upload's length: {remaining} bytes remain", 413, "Content-Length"
    )


def bad_content_type() -> ApiError:
    return tus_error("unsupported_media_type", f"a PATCH's body is sent as {OFFSET_CONTENT_TYPE}", 415, "Content-Type")
