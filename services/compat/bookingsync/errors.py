"""The bookingsync profile's errors: Rails' ``{"errors": {attribute: [messages]}}`` for refused input, naming
the fields the client sent; ``{"error": message}`` for the rest. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from services.core.contract import ItemError
from services.core.errors import ApiError

_PROFILE_FIELDS = {"data": "remote_file", "file": "remote_file", "url": "remote_file_url"}
# Statuses of the native refusals of a client's input, answered as Rails answers a record that fails its
# validations: 422 with the attribute named.
_VALIDATION_STATUSES = frozenset({400, 413, 422})
# Attributes the native create derives from the bytes when the client gives none, as BookingSync's clients
# never do: a fault in them is a fault of the file sent.
_DERIVED_FIELDS = frozenset({"file", "data", "url", "filename", "name", "content_type", "size"})
_INDEXED = re.compile(r"attachments\[([0-9]{1,4})\]")


def invalid(errors: Mapping[str, list[str]]) -> ApiError:
    """A 422 naming every attribute at fault, as Rails' ``{"errors": {attribute: [messages]}}``."""
    first = next(iter(errors))
    message = "; ".join(f"{field} {text}" for field, texts in errors.items() for text in texts)
    listed = {field: list(texts) for field, texts in errors.items()}
    return ApiError("unprocessable_entity", message, field=first, status=422, extra={"errors": listed})


def profile_field(native: str) -> str:
    """The BookingSync name of a native field in an error: ``data`` is ``remote_file``, and in a request of
    many attachments ``attachments[1].url`` is ``attachments[1].remote_file_url``."""
    prefix, dot, last = native.rpartition(".")
    return f"{prefix}{dot}{_PROFILE_FIELDS.get(last, last)}"


def create_refusal(exc: ApiError, item_errors: Sequence[ItemError], native: Mapping[str, Any]) -> ApiError:
    """A create the native rules refused, as the 422 that names what the client sent: the file's name, type
    and size are derived from its bytes, so their faults are the source's (``remote_file`` or
    ``remote_file_url``); in a request of many, each refused attachment by its index."""
    if exc.status not in _VALIDATION_STATUSES:
        return exc
    if item_errors:
        errors: dict[str, list[str]] = {}
        for item in item_errors:
            field = _sent_field(native, f"attachments[{item.index}].{item.field or 'file'}")
            errors.setdefault(field, []).append(item.message)
        return invalid(errors)
    if exc.field is None:
        return exc
    return invalid({_sent_field(native, exc.field): [exc.message]})


def _sent_field(native: Mapping[str, Any], field: str) -> str:
    prefix, dot, last = field.rpartition(".")
    if last in _DERIVED_FIELDS:
        item: Any = native
        if (index := _INDEXED.fullmatch(prefix)) is not None:
            items = native.get("attachments") or []
            item = items[int(index[1])] if int(index[1]) < len(items) else {}
        last = "url" if "url" in item else "data"
    return profile_field(f"{prefix}{dot}{last}")


def error_body(exc: ApiError) -> tuple[int, dict[str, Any]]:
    """The status and body of an error: a refused input is 422 ``{"errors": {field: [message]}}``; anything
    else keeps its status with ``{"error": message}``, as the service's OAuth layer answers 401."""
    errors = exc.extra.get("errors")
    if isinstance(errors, dict):
        return 422, {"errors": errors}
    if exc.field is not None and exc.status in _VALIDATION_STATUSES:
        return 422, {"errors": {profile_field(exc.field): [exc.message]}}
    return exc.status, {"error": exc.message}
