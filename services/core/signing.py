"""Signed, expiring download URLs: anyone holding the link may fetch the file until it expires."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import math
import re
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
    return f"/v1/files/{_quote_id(attachment_id)}/{variant}?expires={expires}&signature={signature}"


class LinkSigner:
    """Signs the links of many records for one secret and expiry: what a list response needs.

    The same bytes as :func:`signed_path`, for less: the keyed HMAC is made once per secret and copied
    per link, and the fixed parts of the message and the URL are built once per instance.
    """

    def __init__(self, secret: bytes, expires: int, base_url: str = "") -> None:
        self._keyed = _keyed_hmac(secret)
        self._head = _field(_TAG)
        # Variant and expiry close every message and URL: precompute both per variant.
        self._tails = {v: _field(v.encode()) + _field(str(expires).encode()) for v in VARIANTS}
        self._prefix = f"{base_url}/v1/files/"
        self._suffixes = {v: f"/{v}?expires={expires}&signature=" for v in VARIANTS}

    def path(self, attachment_id: str, variant: str) -> str:
        return self._path(self._head + _field(attachment_id.encode()), self._prefix + _quote_id(attachment_id), variant)

    def links(self, attachment_id: str, thumbnail: bool, small: bool) -> dict[str, str | None]:
        """A record's ``file`` object: the original's link, and the variants' where they exist."""
        head = self._head + _field(attachment_id.encode())
        base = self._prefix + _quote_id(attachment_id)
        return {
            "original": self._path(head, base, "original"),
            "thumbnail": self._path(head, base, "thumbnail") if thumbnail else None,
            "small": self._path(head, base, "small") if small else None,
        }

    def _path(self, head: bytes, base: str, variant: str) -> str:
        mac = self._keyed.copy()
        mac.update(head + self._tails[variant])
        signature = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")
        return f"{base}{self._suffixes[variant]}{signature}"


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


_TAG = b"attachd-download-v1"
_PLAIN_ID = re.compile(r"[0-9A-Za-z_.~-]*")  # what quote(safe="") leaves alone


def _field(raw: bytes) -> bytes:
    return b"%d:%s" % (len(raw), raw)


def _quote_id(attachment_id: str) -> str:
    return attachment_id if _PLAIN_ID.fullmatch(attachment_id) else quote(attachment_id, safe="")


@functools.lru_cache(maxsize=8)
def _keyed_hmac(secret: bytes) -> hmac.HMAC:
    """HMAC-SHA256 keyed with ``secret`` and fed nothing yet: copy it, never update it."""
    if not secret:
        raise ValueError("signing secret must not be empty")
    return hmac.new(secret, digestmod="sha256")


def _message(attachment_id: str, variant: str, expires: int) -> bytes:
    # Length-prefixed fields: no two different triples can produce the same bytes,
    # whatever characters the id contains. The tag keeps these MACs from being
    # valid for any other use of the same secret.
    return b"".join(_field(raw) for raw in (_TAG, attachment_id.encode(), variant.encode(), str(expires).encode()))


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
