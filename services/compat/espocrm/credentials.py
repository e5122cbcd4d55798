"""Where EspoCRM's clients put their credential. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from services.web.credentials import basic, bearer, header


def credential(headers: Mapping[str, str]) -> str | None:
    """An API user's ``X-Api-Key``; else the password (or token) of ``Espo-Authorization:
    base64(user:password)`` or of HTTP basic, the user name being EspoCRM's and not attachd's; else a
    bearer token. HMAC (``X-Hmac-Authorization``) needs the key's secret, which attachd does not keep."""
    if key := header(headers, "X-Api-Key"):
        return key
    if espo := header(headers, "Espo-Authorization"):
        pair = basic({"Authorization": f"Basic {espo}"})
        return pair[1] or None if pair else None
    if pair := basic(headers):
        return pair[1] or None
    return bearer(headers)
