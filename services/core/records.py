"""The attachment record: the row's columns and the API's JSON shape. Pure."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from services.core import signing

# Selected everywhere a row is read, so every reader sees the same shape.
COLUMNS = (
    "id, seq, account_id, target_type, target_id, field, parent_type, parent_attachment_id, version, "
    "version_root, is_latest, ancestors, attachment_type, name, filename, content_type, size, encode(sha256, 'hex') AS sha256, "
    "storage_key, url, width, height, variants, display_order, available, status, created_from, publish, "
    "session_token, created_by_type, created_by_id, impersonator_id, created_at, updated_at, canceled_at"
)

_PUBLIC = (
    "id", "seq", "account_id", "target_type", "target_id", "field", "parent_type", "parent_attachment_id",
    "version", "is_latest", "ancestors", "attachment_type", "name", "filename", "content_type", "size", "sha256", "url",
    "width", "height", "display_order", "available", "status", "created_from", "publish", "session_token",
)


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def row_to_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as JSON-safe values; the form that travels in job outcomes."""
    return {key: _plain(value) for key, value in dict(row).items()}


def file_links(row: Mapping[str, Any], *, base_url: str, secret: bytes, expires: int) -> dict[str, str | None]:
    if not row.get("storage_key"):
        return {"original": None, "thumbnail": None, "small": None}
    variants = row.get("variants") or {}
    attachment_id = str(row["id"])

    def link(variant: str) -> str:
        return base_url + signing.signed_path(secret, attachment_id, variant, expires)

    return {
        "original": link("original"),
        "thumbnail": link("thumbnail") if variants.get("thumbnail") else None,
        "small": link("small") if variants.get("small") else None,
    }


def to_api(row: Mapping[str, Any], *, base_url: str, secret: bytes, expires: int) -> dict[str, Any]:
    plain = row_to_dict(row)
    record = {key: plain.get(key) for key in _PUBLIC}
    record["created_by"] = {"type": plain.get("created_by_type"), "id": plain.get("created_by_id")}
    record["impersonator_id"] = plain.get("impersonator_id")
    for key in ("created_at", "updated_at", "canceled_at"):
        record[key] = plain.get(key)
    record["file"] = file_links(row, base_url=base_url, secret=secret, expires=expires)
    return record
