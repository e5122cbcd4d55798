"""Signed, expiring download URLs: anyone holding the link may fetch the file until it expires."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from urllib.parse import quote

from services.core.errors import ApiError

VARIANTS = frozenset({"original", "thumbnail", "small"})

# Ten digits reach the year 2286; the cap keeps int() away from hostile input.
_MAX_EXPIRES_DIGITS = 12


def sign(secret: bytes, attachment_id: str, variant: str, expires: int) -> str:
    """HMAC-SHA256 over (id, variant, expires), urlsafe base64 without padding."""
    if not secret:
        raise ValueError("signing secret must not be empty")
    _check_variant(variant)
    digest = hmac.new(secret, _message(attachment_id, variant, expires), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def signed_path(secret: bytes, attachment_id: str, variant: str, expires: int) -> str:
    signature = sign(secret, attachment_id, variant, expires)
    return f"/v1/files/{quote(attachment_id, safe='')}/{variant}?expires={expires}&signature={signature}"


def verify(
    secret: bytes,
    attachment_id: str,
    variant: str,
    expires: str | None,
    signature: str | None,
    *,
    now: float,
) -> None:
    """Raise 403 ``invalid_signature`` or ``link_expired`` unless the link is good at ``now``.

    The signature is checked first, so only a genuine link is ever told it expired.
    """
    invalid = ApiError("invalid_signature", "the download link is invalid", status=403)
    if (
        variant not in VARIANTS
        or expires is None
        or signature is None
        # compare_digest() refuses non-ASCII str.
        or not signature.isascii()
        or not _is_canonical_int(expires)
    ):
        raise invalid
    expected = sign(secret, attachment_id, variant, int(expires))
    if not hmac.compare_digest(expected, signature):
        raise invalid
    if now >= int(expires):
        raise ApiError("link_expired", "the download link has expired", status=403)


def expiry(now: float, ttl_s: int, *, bucket_s: int = 300) -> int:
    """The first multiple of ``bucket_s`` at least ``ttl_s`` after ``now``.

    Every link signed within one bucket is byte-identical, so clients and CDNs
    can cache it; the price is up to ``bucket_s`` of extra lifetime.
    """
    if ttl_s < 0 or bucket_s <= 0:
        raise ValueError("ttl_s must be >= 0 and bucket_s > 0")
    earliest = math.ceil(now) + ttl_s
    return -(-earliest // bucket_s) * bucket_s


def _message(attachment_id: str, variant: str, expires: int) -> bytes:
    # Length-prefixed fields: no two different triples can produce the same bytes,
    # whatever characters the id contains. The tag keeps these MACs from being
    # valid for any other use of the same secret.
    fields = ("attachd-download-v1", attachment_id, variant, str(expires))
    return b"".join(b"%d:%s" % (len(raw), raw) for raw in (field.encode() for field in fields))


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")


def _is_canonical_int(text: str) -> bool:
    # One spelling per expiry: no sign, no leading zeros, no non-ASCII digits.
    return (
        0 < len(text) <= _MAX_EXPIRES_DIGITS
        and text.isascii()
        and text.isdigit()
        and (text == "0" or not text.startswith("0"))
    )
