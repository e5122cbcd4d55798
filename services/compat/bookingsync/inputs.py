"""What a BookingSync client sends, translated: the create body to the native one, the list parameters and
ids to the native query filter. Pure: a refusal is the 422 of ``errors.invalid``."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.compat.bookingsync.answers import TARGET_TYPES
from services.compat.bookingsync.errors import invalid
from services.core.errors import ApiError

_ASCII_WHITESPACE = re.compile(r"[ \t\r\n\f\v]+")
_DIGITS = re.compile(r"[0-9]{1,18}")

PER_PAGE_DEFAULT = 100
PER_PAGE_MAX = 100
MAX_IDS = 100


# -- create -----------------------------------------------------------------------------------------------


def _present(value: Any) -> bool:
    """Rails' ``present?``: not null and not a blank string."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def native_item(obj: Any) -> dict[str, Any]:
    """One BookingSync attachment to the native create fields; every attribute at fault in one 422.
    Attributes the service does not take (``id``, ``account``...) are ignored, as strong parameters do."""
    if not isinstance(obj, dict):
        raise invalid({"attachments": ["must be a list of attachment objects"]})
    errors: dict[str, list[str]] = {}
    target_type, target_id = obj.get("target_type"), obj.get("target_id")
    if not _present(target_id):
        errors["target_id"] = ["can't be blank"]
    elif not isinstance(target_id, str) or not _is_uuid(target_id):
        errors["target_id"] = ["is not a valid UUID"]
    if not _present(target_type):
        errors["target_type"] = ["can't be blank"]
    elif target_type not in TARGET_TYPES:
        errors["target_type"] = [f"is not included in the list ({', '.join(TARGET_TYPES)})"]
    remote_file, remote_file_url = obj.get("remote_file"), obj.get("remote_file_url")
    if _present(remote_file) and _present(remote_file_url):
        errors["remote_file"] = ["must be blank when remote_file_url is given: send exactly one of them"]
    elif not _present(remote_file) and not _present(remote_file_url):
        errors["remote_file"] = ["can't be blank: send remote_file (Base64) or remote_file_url"]
    elif _present(remote_file) and not isinstance(remote_file, str):
        errors["remote_file"] = ["must be a Base64-encoded string"]
    elif _present(remote_file_url) and not isinstance(remote_file_url, str):
        errors["remote_file_url"] = ["must be a URL string"]
    if errors:
        raise invalid(errors)
    native: dict[str, Any] = {"target_type": target_type, "target_id": str(uuid.UUID(target_id))}
    if isinstance(remote_file, str) and _present(remote_file):
        native["data"] = unwrap_base64(remote_file)
    else:
        assert isinstance(remote_file_url, str)  # exactly one of the two is a present string, checked above
        native["url"] = remote_file_url.strip()
    return native


def unwrap_base64(text: str) -> str:
    """Base64 as Ruby's ``Base64.encode64`` writes it (60-character lines, each ending in a newline) or
    MIME's 76-character lines, joined into the one strict line the native decoder takes."""
    return _ASCII_WHITESPACE.sub("", text)


def native_create(body: Any) -> dict[str, Any]:
    """``{"attachments": [{...}]}`` to the native create body: one attachment as one native object; more
    as a native bulk request, all or nothing."""
    if not isinstance(body, dict) or "attachments" not in body:
        raise invalid({"attachments": ['is missing: send {"attachments": [{...}]}']})
    items = body["attachments"]
    if not isinstance(items, list) or not items:
        raise invalid({"attachments": ["must be a non-empty list of attachment objects"]})
    if len(items) == 1:
        return native_item(items[0])
    natives = []
    for index, obj in enumerate(items):
        try:
            natives.append(native_item(obj))
        except ApiError as exc:
            errors = exc.extra.get("errors", {})
            raise invalid({f"attachments[{index}].{field}": texts for field, texts in errors.items()}) from None
    return {"attachments": natives, "mode": "atomic"}


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# -- reading: ids, list parameters, the filter ------------------------------------------------------------


def parse_ids(text: str) -> list[str] | None:
    """``:id`` may be one id or several separated by commas, as every BookingSync endpoint takes them; None
    when any is not an attachment id (so nothing can be found: 404)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(_is_uuid(p) for p in parts):
        return None
    if len(parts) > MAX_IDS:
        raise invalid({"id": [f"lists at most {MAX_IDS} ids"]})
    return list(dict.fromkeys(str(uuid.UUID(p)) for p in parts))


@dataclass(frozen=True)
class ListParams:
    page: int = 1
    per_page: int = PER_PAGE_DEFAULT
    updated_since: dt.datetime | None = None
    fields: frozenset[str] | None = None

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


def parse_list_params(query: Mapping[str, str]) -> ListParams:
    """``page``, ``per_page`` (at most 100, more is cut to 100 as the service does), ``updated_since`` and
    ``fields``; other parameters are ignored, as Rails ignores them."""
    errors: dict[str, list[str]] = {}
    page = _positive(query.get("page"), "page", 1, errors)
    per_page = min(_positive(query.get("per_page"), "per_page", PER_PAGE_DEFAULT, errors), PER_PAGE_MAX)
    since = None
    if _present(query.get("updated_since")):
        since = parse_time(query["updated_since"])
        if since is None:
            errors["updated_since"] = ["is not a valid time (ISO 8601, e.g. 2024-01-15T11:00:00Z)"]
    if errors:
        raise invalid(errors)
    return ListParams(page, per_page, since, parse_fields(query))


def parse_fields(query: Mapping[str, str]) -> frozenset[str] | None:
    """``fields=id,file``: the attributes to answer with; None: all of them."""
    text = query.get("fields")
    if text is None or not _present(text):
        return None
    return frozenset(f.strip() for f in text.split(",") if f.strip())


def _positive(text: str | None, field: str, default: int, errors: dict[str, list[str]]) -> int:
    if not _present(text):
        return default
    assert text is not None
    if not _DIGITS.fullmatch(text.strip()) or int(text) < 1:
        errors[field] = ["must be a positive integer"]
        return default
    return int(text)


def parse_time(text: str) -> dt.datetime | None:
    """A time as clients send ``updated_since``: ISO 8601 (``Z`` or an offset; none means UTC), or Ruby's
    ``Time#to_s`` in UTC (``2014-01-01 15:43:06 UTC``)."""
    text = text.strip()
    if text.endswith(" UTC"):
        text = text[: -len(" UTC")]
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        return None


def list_filter(params: ListParams, ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The native query-language filter of a list: the three task-management target types, the ids asked
    for, and what changed since ``updated_since``."""
    nodes: list[dict[str, Any]] = [{"field": "target_type", "op": "in", "value": list(TARGET_TYPES)}]
    if ids is not None:
        nodes.append({"field": "id", "op": "in", "value": list(ids)})
    if params.updated_since is not None:
        nodes.append({"field": "updated_at", "op": "gte", "value": params.updated_since.isoformat()})
    return nodes


def deleted_filter(since: dt.datetime) -> list[dict[str, Any]]:
    """Attachments canceled since ``since``: the ``meta.deleted_ids`` of an ``updated_since`` list."""
    return [
        {"field": "target_type", "op": "in", "value": list(TARGET_TYPES)},
        {"field": "canceled_at", "op": "gte", "value": since.isoformat()},
    ]
