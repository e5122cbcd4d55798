"""Toggl Focus task attachments in attachd's terms, and back: the path, the credential, the item shape, the
error body, ``order_by``, the multipart forms and the update body. Pure, no I/O.

A Toggl task is the target ``Task`` whose id is ``<organization_id>:<workspace_id>:<task_id>``, so the same
task number in two workspaces (or organizations) is two tasks; an attachment's Toggl ``id`` is its ``seq``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.core.contract import Changes
from services.core.errors import ApiError, bad_request
from services.core.listing import SortKey
from services.core.validation import parse_changes
from services.ingress.multipart import Form
from services.web.credentials import basic, bearer

PROFILE = "toggl"
TARGET_TYPE = "Task"
MAX_BULK_FILES = 10
# What Toggl's clients put as the password of HTTP basic auth when the user is an API token.
API_TOKEN_PASSWORD = "api_token"  # a literal of the protocol, not a secret
# A record that carries no media type of its own (none does today: every Toggl upload is a file).
OCTET_STREAM = "application/octet-stream"
NOT_FOUND = "TaskAttachment does not exist"

# Path parameters are integers: ASCII digits, in a signed 64-bit range (at most 18 digits keeps it simple).
_INTEGER = re.compile(r"[0-9]{1,18}")
# The per-file fields of a bulk form, as the native multipart reader also reads them.
_INDEXED = re.compile(r"(names|display_orders)\[([0-9]{1,4})\]")


@dataclass(frozen=True)
class TaskPath:
    """The organization, workspace and task a request's path names."""

    organization_id: int
    workspace_id: int
    task_id: int

    @property
    def target_id(self) -> str:
        return f"{self.organization_id}:{self.workspace_id}:{self.task_id}"


def path_integer(value: str, name: str) -> int:
    if not _INTEGER.fullmatch(value):
        raise bad_request("invalid_value", f"{name} must be an integer", name)
    return int(value)


def task_path(match_info: Mapping[str, str]) -> TaskPath:
    return TaskPath(
        organization_id=path_integer(match_info["organization_id"], "organization_id"),
        workspace_id=path_integer(match_info["workspace_id"], "workspace_id"),
        task_id=path_integer(match_info["task_id"], "task_id"),
    )


def task_id_of(target_id: str) -> int:
    """The Toggl task id of a ``Task`` target id made by ``TaskPath.target_id``."""
    return int(target_id.rpartition(":")[2])


def is_on_task(row: Mapping[str, Any], path: TaskPath) -> bool:
    return row["target_type"] == TARGET_TYPE and row["target_id"] == path.target_id


# -- credentials ------------------------------------------------------------------------------------

# An API key's bindings the profile checks against the path: binding name -> the path parameter.
BINDINGS = {"org": "organization_id", "workspace": "workspace_id"}


def credential(headers: Mapping[str, str]) -> str | None:
    """The key or token: a bearer token (Toggl Focus's ``toggl_sk_...`` keys), or HTTP basic as Toggl's
    clients send an API token (``<token>:api_token``); any other basic pair is taken as ``<user>:<token>``."""
    if (token := bearer(headers)) is not None:
        return token
    if (pair := basic(headers)) is not None:
        user, password = pair
        return (user if password == API_TOKEN_PASSWORD else password) or None
    return None


def forbidden(message: str, field: str) -> ApiError:
    return ApiError("forbidden", message, field=field, status=403)


def check_bindings(bindings: Mapping[str, str], path: TaskPath) -> None:
    """A key bound to an organization or workspace serves that one only. A binding this profile does not
    know refuses everything: a key limited in a way that cannot be checked must not pass as unlimited."""
    for name, value in bindings.items():
        param = BINDINGS.get(name)
        if param is None:
            raise forbidden(f"this key is bound to {name}, which the toggl profile cannot check", name)
        if value.strip() != str(getattr(path, param)):
            raise forbidden(f"this key is not allowed on {param} {getattr(path, param)}", param)


# -- answers ----------------------------------------------------------------------------------------


def item(row: Mapping[str, Any]) -> dict[str, Any]:
    """A task attachment as Toggl shows it, from an attachment row (a database record or an outcome's row)."""
    return {
        "created_at": row["created_at"],
        "deleted_at": row["canceled_at"],
        "display_order": row["display_order"],
        "id": row["seq"],
        "mime_type": row["content_type"] or OCTET_STREAM,
        "name": row["name"],
        "size": row["size"] or 0,
        "task_id": task_id_of(row["target_id"]),
        "updated_at": row["updated_at"],
    }


# Toggl Focus names what went wrong in a word, as its Go validator does, and the details in a sentence.
_KINDS = {400: "validation", 401: "unauthorized", 403: "forbidden", 404: "not_found"}


def error_body(error: ApiError, trace_id: str) -> dict[str, Any]:
    """Toggl Focus's error body: ``{"error", "error_description", "trace_id"}``; the description names the
    field the error is about."""
    kind = _KINDS.get(error.status) or ("internal_error" if error.status >= 500 else error.code)
    description = error.message
    if error.field and error.field not in description:
        description = f"{error.field}: {description}"
    return {"error": kind, "error_description": description, "trace_id": trace_id}


def not_found() -> ApiError:
    return ApiError("not_found", NOT_FOUND, status=404)


def with_file_errors(error: ApiError, file_errors: Iterable[tuple[int, str | None, str]]) -> ApiError:
    """A failed bulk upload's error, its message naming each refused file: ``files[1] (a.exe): ...``."""
    details = [f"files[{index}]{f' ({name})' if name else ''}: {message}" for index, name, message in file_errors]
    if details:
        error.message = f"{error.message} ({'; '.join(details)})"
    return error


# -- list -------------------------------------------------------------------------------------------

LIST_PARAMS = frozenset({"order_by"})
# Toggl's sort names and attachd's sort keys.
ORDERABLE = {
    "id": "seq",
    "name": "name",
    "size": "size",
    "display_order": "display_order",
    "created_at": "created_at",
    "updated_at": "updated_at",
}
DEFAULT_ORDER = (SortKey("display_order", False), SortKey("created_at", False))


def check_list_query(names: Iterable[str]) -> None:
    for name in names:
        if name not in LIST_PARAMS:
            raise bad_request("unknown_parameter", f"{name} is not a parameter of this route (only order_by)", name)


def parse_order_by(values: Iterable[str]) -> tuple[SortKey, ...]:
    """``order_by`` as the ``[]string`` Toggl documents: repeated (``order_by=a&order_by=-b``) or
    comma-separated, each a field name, ``-`` first for descending."""
    keys: list[SortKey] = []
    seen: set[str] = set()
    for value in values:
        for term in value.split(","):
            term = term.strip()
            name = term.removeprefix("-").removeprefix("+")
            if name not in ORDERABLE:
                choices = ", ".join(ORDERABLE)
                message = f"cannot order by {term!r}; choose from {choices} (- for descending)"
                raise bad_request("invalid_order_by", message, "order_by")
            if name in seen:
                raise bad_request("invalid_order_by", f"{name} appears twice in order_by", "order_by")
            seen.add(name)
            keys.append(SortKey(ORDERABLE[name], term.startswith("-")))
    return tuple(keys) or DEFAULT_ORDER


# -- creates ----------------------------------------------------------------------------------------


def require_multipart(content_type: str) -> None:
    if content_type != "multipart/form-data":
        raise bad_request("invalid_body", "send the attachment as multipart/form-data with its file part", "file")


def _given(fields: Mapping[str, str], name: str) -> bool:
    return fields.get(name, "").strip() != ""


def check_single_form(form: Form) -> None:
    """``POST .../attachments``: one ``file`` and its ``display_order`` (``name`` is optional)."""
    if not form.files:
        raise bad_request("missing_field", "file is required", "file")
    if len(form.files) > 1:
        raise bad_request("too_many_files", "one file per request; send several to .../attachments/bulk", "file")
    if not _given(form.fields, "display_order"):
        raise bad_request("missing_field", "display_order is required", "display_order")


def check_bulk_form(form: Form) -> None:
    """``POST .../attachments/bulk``: 1 to 10 ``files``, ``display_orders[i]`` for each, ``names[i]``
    optional; an index that names no file is refused rather than ignored."""
    count = len(form.files)
    if count == 0:
        raise bad_request("missing_field", "files is required", "files")
    if count > MAX_BULK_FILES:
        raise bad_request("too_many_files", f"at most {MAX_BULK_FILES} files per request, not {count}", "files")
    for key in form.fields:
        if (m := _INDEXED.fullmatch(key)) and int(m.group(2)) >= count:
            raise bad_request("invalid_value", f"{key} names no file: {count} were sent", key)
    for index in range(count):
        if not _given(form.fields, f"display_orders[{index}]"):
            raise bad_request("missing_field", f"display_orders[{index}] is required", f"display_orders[{index}]")


FormFields = Callable[[dict[str, str]], dict[str, str]]


def _target(path: TaskPath) -> dict[str, str]:
    return {"target_type": TARGET_TYPE, "target_id": path.target_id}


def single_form_fields(path: TaskPath) -> FormFields:
    """The native create fields of a checked single form; fields Toggl does not document are dropped, as
    its own form binding drops them."""

    def translate(fields: dict[str, str]) -> dict[str, str]:
        native = {**_target(path), "display_order": fields["display_order"]}
        if "name" in fields:
            native["name"] = fields["name"]
        return native

    return translate


def bulk_form_fields(path: TaskPath) -> FormFields:
    """The native create fields of a checked bulk form: ``names[i]`` and ``display_orders[i]`` are the
    native per-file names already; ``mode=atomic`` makes one bad file refuse them all."""

    def translate(fields: dict[str, str]) -> dict[str, str]:
        native = {**_target(path), "mode": "atomic"}
        native.update({key: value for key, value in fields.items() if _INDEXED.fullmatch(key)})
        return native

    return translate


# -- update -----------------------------------------------------------------------------------------

UPDATABLE = ("display_order", "name")


def parse_update(body: Any) -> Changes:
    """``PUT .../{id}``'s ``{"display_order", "name"}``: either or both; null or other keys are not
    changes (Go's JSON binding ignores them), but a body with neither is refused."""
    if not isinstance(body, dict):
        raise bad_request("invalid_body", "the body must be a JSON object", None)
    given = {key: body[key] for key in UPDATABLE if body.get(key) is not None}
    if not given:
        raise bad_request("missing_field", "give display_order or name", "display_order")
    return parse_changes(given)
