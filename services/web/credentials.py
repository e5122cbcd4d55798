"""Where each API's clients put their credential: pure functions of the request's headers."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping


def bearer(headers: Mapping[str, str]) -> str | None:
    """``Authorization: Bearer <credential>``."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def basic(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """``Authorization: Basic base64(user:password)`` as (user, password)."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A credential in a header of its own (EspoCRM's ``X-Api-Key``, Autotask's ``Secret``)."""
    value = headers.get(name, "").strip()
    return value or None
