"""The JSON ``data`` source: raw base64 or a base64 ``data:`` URI (RFC 2397)."""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

from services.core.errors import ApiError

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(f"{_TOKEN}/{_TOKEN}")
_NOT_ALPHABET = re.compile(r"[^A-Za-z0-9+/=]")
_MISPLACED_PADDING = "'=' padding must be one or two characters at the very end"


@dataclass(frozen=True)
class DataSource:
    base64: str
    declared_type: str | None


def parse_data(value: object, *, field: str = "data") -> DataSource:
    """Split ``value`` into its base64 payload and the media type a data: URI declares.

    The payload is not checked here: see :func:`check_size` and :func:`decode_to`.
    """
    if not isinstance(value, str) or not value.strip():
        raise _invalid_data("data must be a non-empty base64 string or data: URI", field)
    value = value.strip()
    if value[:5].lower() != "data:":
        return DataSource(value, None)
    header, comma, payload = value[5:].partition(",")
    if not comma:
        raise _invalid_data("the data: URI has no ',' before its data", field)
    media_type, *params = header.split(";")
    if not params or params[-1].strip().lower() != "base64":
        raise _invalid_data("only base64 data: URIs are accepted", field)
    media_type = media_type.strip().lower()
    if media_type and not _MEDIA_TYPE.fullmatch(media_type):
        raise _invalid_data("the data: URI has a malformed media type", field)
    if not payload:
        raise _invalid_data("the data: URI carries no data", field)
    return DataSource(payload, media_type or None)


def decoded_size(b64: str) -> int:
    """The number of bytes ``b64`` decodes to, computed without decoding it.

    Exact for valid base64, padded or not; never negative for anything else.
    """
    padding = 2 if b64.endswith("==") else 1 if b64.endswith("=") else 0
    return max(len(b64) * 3 // 4 - padding, 0)


def check_size(b64: str, max_bytes: int, *, field: str = "data") -> None:
    if decoded_size(b64) > max_bytes:
        raise ApiError(
            "size_exceeded",
            f"data is larger than the maximum of {max_bytes} bytes",
            field=field,
            status=413,
        )


def decode_to(
    b64: str,
    write: Callable[[bytes], object],
    *,
    field: str = "data",
    chunk_chars: int = 1 << 20,
) -> int:
    """Strictly decode standard, padded base64 into ``write``, one chunk at a time.

    Returns the number of bytes written. ``chunk_chars`` is rounded down to a
    multiple of 4 so that every chunk decodes on its own.
    """
    step = chunk_chars - chunk_chars % 4
    if step <= 0:
        raise ValueError("chunk_chars must be at least 4")
    if len(b64) % 4:
        # Often a symptom of stray characters (e.g. MIME line breaks): name those first.
        raise _invalid_base64(_reason(b64, 0, otherwise="its length is not a multiple of 4"), field)
    written = 0
    for start in range(0, len(b64), step):
        chunk = b64[start : start + step]
        # Each chunk is valid on its own when it ends in padding, so padding
        # inside the payload would go unnoticed at a chunk boundary.
        if start + step < len(b64) and chunk.endswith("="):
            raise _invalid_base64(_MISPLACED_PADDING, field)
        try:
            data = binascii.a2b_base64(chunk, strict_mode=True)
        except ValueError:
            # Absent a foreign character, strict mode can only have objected to the padding.
            raise _invalid_base64(_reason(chunk, start, otherwise=_MISPLACED_PADDING), field) from None
        write(data)
        written += len(data)
    return written


def _reason(text: str, offset: int, *, otherwise: str) -> str:
    bad = _NOT_ALPHABET.search(text)
    if bad is None:
        return otherwise
    return (
        f"character {bad.group()!r} at position {offset + bad.start()} is not in the standard "
        "base64 alphabet (A-Z a-z 0-9 + /; not URL-safe, no whitespace)"
    )


def _invalid_data(message: str, field: str) -> ApiError:
    return ApiError("invalid_data", message, field=field)


def _invalid_base64(reason: str, field: str) -> ApiError:
    return ApiError("invalid_base64", f"data is not valid base64: {reason}", field=field)
