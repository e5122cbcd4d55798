"""ProjectCor's shapes, translated to and from the native ones. Pure: no I/O.

- ``UploadForm``: the multipart form fields of ``POST /v1/tasks/{task_id}/attachments`` as the native
  create's (the task from the path, ``attachment_parent_id`` as ``version_of``, always partial);
- ``file_record``: an attachment row as one of the answer's ``files[]``;
- ``file_error``, ``error_body``, ``failure``: refusals, per file and whole, in ProjectCor's words.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from services.core.contract import AttachmentRow, ErrorInfo, ItemError
from services.core.errors import ApiError
from services.core.filenames import extension_of

TARGET_TYPE = "Task"
# The native create field that makes an upload the next version of another (ProjectCor's attachment_parent_id).
VERSION_FIELD = "version_of"
FORM_FIELDS = ("available", "session_token", "attachment_parent_id", "status", "created_from")
CREATED_FROM = ("task_panel", "rework", "feedback")
DEFAULT_CREATED_FROM = "task_panel"
# What a form sends for "no value" (the document's own example sends the string null).
_NO_VALUE = ("", "null")
# A task id or attachment id: a positive integer, as ProjectCor's are (a bigint at most).
_ID = re.compile(r"[1-9][0-9]{0,17}")

# Native field names as this API names them, in the errors of the native create.
_PROFILE_FIELDS = {
    VERSION_FIELD: "attachment_parent_id",
    "parent_attachment_id": "attachment_parent_id",
    "data": "file",
    "url": "file",
    "size": "file",
    "filename": "file",
}
_NATIVE_NAMES_IN_TEXT = re.compile(rf"\b({VERSION_FIELD}|parent_attachment_id)\b")
# The words the document uses for why a file was refused ("size exceeded or invalid extension").
_REASONS = {
    "size_exceeded": "Size exceeded",
    "invalid_extension": "Invalid extension",
    "content_mismatch": "Invalid extension",
    "empty_file": "Empty file",
}


class RequestError(ApiError):
    """A refusal of this profile's own, in this API's words already (no native names to translate)."""


def _refused(code: str, message: str, field: str) -> RequestError:
    return RequestError(code, message, field=field, status=400)


def parse_id(value: str, field: str) -> int:
    """A path or form id: a positive integer."""
    if not _ID.fullmatch(value):
        raise _refused("invalid_value", f"{field} must be a positive integer", field)
    return int(value)


class UploadForm:
    """The translation of one upload's form fields to the native create's (``CreateOptions.form_fields``):
    the task from the path, ``attachment_parent_id`` as ``version_of``, always partial. It keeps the
    ``attachment_parent_id`` it was given, so that a refusal can say whether it names anything."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        self.attachment_parent_id: int | None = None

    def __call__(self, fields: dict[str, str]) -> dict[str, str]:
        for name in fields:
            if name not in FORM_FIELDS:
                raise _refused(
                    "unknown_field", f"{name} is not a field of this request; fields: {', '.join(FORM_FIELDS)}", name
                )
        native = {"target_type": TARGET_TYPE, "target_id": str(self.task_id), "mode": "partial"}
        for name in ("available", "session_token", "status"):  # same names, same values ("null": none)
            if name in fields:
                native[name] = fields[name]
        native["created_from"] = _created_from(fields.get("created_from"))
        parent = fields.get("attachment_parent_id")
        if parent is not None and parent not in _NO_VALUE:
            self.attachment_parent_id = parse_id(parent, "attachment_parent_id")
            native[VERSION_FIELD] = str(self.attachment_parent_id)
        return native


def unknown_parent(attachment_parent_id: int) -> RequestError:
    return RequestError(
        "not_found",
        f"attachment_parent_id {attachment_parent_id} is not an attachment of this company",
        field="attachment_parent_id",
        status=404,
    )


def _created_from(value: str | None) -> str:
    if value is None or value in _NO_VALUE:
        return DEFAULT_CREATED_FROM
    if value not in CREATED_FROM:
        raise _refused("invalid_value", f"created_from must be one of {', '.join(CREATED_FROM)}", "created_from")
    return value


def _timestamp(value: dt.datetime) -> str:
    """As the document writes them: UTC, to the second, with Z."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _integer(value: str | None) -> int | None:
    """An id attachd keeps as text, as the integer ProjectCor has; None when it is not one."""
    return int(value) if value is not None and _ID.fullmatch(value) else None


def referenced_ids(rows: Iterable[AttachmentRow]) -> set[uuid.UUID]:
    """The attachments the rows' records name by integer id (the version revised, the first one)."""
    return {ref for row in rows for ref in (row.version_of, row.version_root) if ref is not None}


def company_id(account_id: str, bindings: Mapping[str, str]) -> int | None:
    """The caller's company as an integer: an API key's ``company`` binding, else a numeric account id."""
    return _integer(bindings.get("company", account_id))


def file_record(
    row: AttachmentRow, *, url: str | None, seqs: Mapping[uuid.UUID, int], company: int | None
) -> dict[str, Any]:
    """One of ``files[]``. ``url`` is the signed link to the bytes (None for a link attachment, whose url is
    its own); ``seqs`` holds the integer ids of the attachments the row refers to (``referenced_ids``);
    ``company`` is the caller's (``company_id``)."""
    task = _integer(row.target_id) if row.target_type == TARGET_TYPE else None
    extension = extension_of(row.filename or "") or None
    return {
        "id": row.seq,
        "url": url if url is not None else row.url,
        "name": row.name,
        "created_at": _timestamp(row.created_at),
        "updated_at": _timestamp(row.updated_at),
        "source": "local" if row.storage_key else "url",
        "size": row.size,
        # As multer names them: the name it is stored under, and the name it arrived with.
        "filename": f"{row.id}.{extension}" if extension else str(row.id),
        "available": row.available,
        "item_id": task,
        "originalname": row.filename or row.name,
        "attachment_parent_id": None if row.version_of is None else seqs.get(row.version_of),
        "file_type": extension,
        "discussions_id": None,
        "user_id": _integer(row.created_by_id) if row.created_by_type == "User" else None,
        "parent_id": None if row.version_root is None else seqs.get(row.version_root),
        "type": row.attachment_type,
        "version": row.version,
        "status": row.status,
        "token": row.session_token,
        "company_id": company,
        "task_log_reworks_id": None,
        "task_log_id": task,
        "media_type": row.content_type,
        "graphics_count": None,
        "created_from": row.created_from,
    }


def _profile_field(field: str | None) -> str | None:
    return None if field is None else _PROFILE_FIELDS.get(field, field)


def _profile_text(message: str) -> str:
    return _NATIVE_NAMES_IN_TEXT.sub(lambda m: _PROFILE_FIELDS[m.group(1)], message)


def file_error(error: ItemError) -> dict[str, str]:
    """One of ``errors[]``: the refused file and why, in the document's words first."""
    reason = _REASONS.get(error.code)
    message = _profile_text(error.message)
    return {"filename": error.filename or "", "message": f"{reason}: {message}" if reason else message}


def error_body(code: str, message: str, field: str | None) -> dict[str, Any]:
    """The body of a refused request: ``{"message", "code", "field"}`` (``field`` when one is to blame)."""
    body: dict[str, Any] = {"message": _profile_text(message), "code": code}
    if (named := _profile_field(field)) is not None:
        body["field"] = named
    return body


def api_error_body(exc: ApiError) -> dict[str, Any]:
    if isinstance(exc, RequestError):
        body: dict[str, Any] = {"message": exc.message, "code": exc.code}
        if exc.field is not None:
            body["field"] = exc.field
        return body
    return error_body(exc.code, exc.message, exc.field)


def request_failure(error: ErrorInfo, errors: list[ItemError]) -> tuple[int, dict[str, Any]] | None:
    """The status and body of an upload refused as a whole: every file refused for the same field of the
    request (an ``attachment_parent_id`` on another task), or an error that is no file's. None when each
    file was refused for itself (size, extension): that is answered as any partial upload, with no file
    stored and each one's error listed (ProjectCor uploads are always partial)."""
    if errors:
        first = errors[0]
        same_cause = all((e.code, e.field) == (first.code, first.field) for e in errors)
        if same_cause and _profile_field(first.field) not in (None, "file"):
            return first.status, error_body(first.code, first.message, first.field)
        return None
    return error.status, error_body(error.code, error.message, error.field)
