"""Conditional and single-range requests (RFC 9110 sections 13 and 14)."""

from __future__ import annotations

import re

from services.core.errors import ApiError

# One range-spec only: a multi-range request needs multipart/byteranges, and
# RFC 9110 lets a server ignore Range altogether and send the full body instead.
_RANGE = re.compile(r"bytes=(?:(?P<first>[0-9]+)-(?P<last>[0-9]*)|-(?P<suffix>[0-9]+))", re.IGNORECASE)

_ENTITY_TAG = re.compile(r'(?:W/)?("[^"]*")')

# int() refuses strings over 4300 digits, and anything past 20 exceeds every size.
_MAX_DIGITS = 20


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(start, end)`` byte range to send, or None to send everything.

    Raises 416 ``range_not_satisfiable`` when the range lies wholly past the end.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    if match["suffix"] is not None:
        length = _number(match["suffix"])
        if length == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - length, 0), size - 1
    first = _number(match["first"])
    last = _number(match["last"]) if match["last"] else None
    if last is not None and last < first:
        return None  # an invalid range-spec, not an unsatisfiable one
    if first >= size:
        raise _unsatisfiable(size)
    return first, size - 1 if last is None else min(last, size - 1)


def content_range(start: int, end: int, size: int) -> str:
    if not 0 <= start <= end < size:
        raise ValueError(f"invalid range {start}-{end} for size {size}")
    return f"bytes {start}-{end}/{size}"


def if_range_matches(if_range: str | None, etag: str) -> bool:
    """Whether a Range may be honoured under ``If-Range`` (absent: yes).

    If-Range requires the strong comparison, so a weak tag on either side never
    matches; neither does an HTTP-date, since we validate by entity tag only.
    """
    if if_range is None:
        return True
    if_range = if_range.strip()
    return if_range == etag and not etag.startswith("W/")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` matches ``etag`` (weak comparison, as RFC 9110 13.1.2 requires)."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    # Tags are matched rather than split on commas: an opaque-tag may contain one.
    opaque = etag.removeprefix("W/")
    return any(tag == opaque for tag in _ENTITY_TAG.findall(if_none_match))


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        "range_not_satisfiable",
        f"the requested range is outside the {size}-byte file",
        status=416,
        headers={"Content-Range": f"bytes */{size}"},
    )
