"""What attachd answers, typed: the attachment record, a page of them, a write's status.

Every field but ``id`` has a default, so a query's ``include_fields`` (a record with a few fields) and
records from a newer attachd (fields this client does not know are ignored) decode too.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import msgspec


@dataclass(frozen=True)
class Target:
    """What attachments are attached to: ``Target("Task", "42")``, or ``Target.parse("Task:42")``."""

    type: str
    id: str

    @classmethod
    def parse(cls, text: str) -> Target:
        kind, sep, ident = text.partition(":")
        if not sep or not kind.strip() or not ident.strip():
            raise ValueError(f"a target is TYPE:ID, like Task:42 (not {text!r})")
        return cls(kind.strip(), ident.strip())

    def __str__(self) -> str:
        return f"{self.type}:{self.id}"


class FileLinks(msgspec.Struct, frozen=True):
    """Signed, expiring links to the bytes; the variants are None unless the file is a transformable image."""

    original: str | None = None
    thumbnail: str | None = None
    small: str | None = None


class Creator(msgspec.Struct, frozen=True):
    type: str | None = None
    id: str | None = None


class Attachment(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    seq: int | None = None
    account_id: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    field: str | None = None
    parent_type: str | None = None
    parent_attachment_id: str | None = None
    version: int | None = None
    is_latest: bool | None = None
    version_of: str | None = None
    ancestors: list[str] | None = None
    attachment_type: str | None = None
    name: str | None = None
    filename: str | None = None
    content_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    url: str | None = None
    width: int | None = None
    height: int | None = None
    display_order: int | None = None
    available: bool | None = None
    status: str | None = None
    created_from: str | None = None
    publish: str | None = None
    session_token: str | None = None
    created_by: Creator | None = None
    impersonator_id: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    canceled_at: dt.datetime | None = None
    file: FileLinks | None = None


class Page(msgspec.Struct, frozen=True):
    """One page of a list or a query; ``next_cursor`` fetches the next (None: this was the last)."""

    attachments: list[Attachment]
    next_cursor: str | None = None


class UploadStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/uploads/{id}``: ``queued``, ``in_progress``, ``complete`` (with the record) or ``failed``."""

    id: str
    status: str
    status_url: str | None = None
    attachment: Attachment | None = None
    attachments: list[Attachment] = msgspec.field(default_factory=list)
    error: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("complete", "failed")


class Count(msgspec.Struct, frozen=True):
    count: int
