"""BookingSync's task_management attachments as pure translations: the create body to the native one, the
native record to BookingSync's, its envelope, its list parameters and pagination headers, its errors.
No I/O: the handlers call these and the tests call them directly."""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from yarl import URL

from services.core.auth import Principal
from services.core.contract import ItemError
from services.core.errors import ApiError

TARGET_TYPES = ("TaskManagement::Task", "TaskManagement::TaskComment", "TaskManagement::Template")
# BookingSync clients send JSON as JSON:API's media type; the service answers in it.
MEDIA_TYPES = ("application/json", "application/vnd.api+json")
RESPONSE_TYPE = "application/vnd.api+json"

_API_ROOT = "https://www.bookingsync.com/api/v3"
# The related resources live on BookingSync itself: the envelope names them exactly as the service does.
ENVELOPE_LINKS = {
    "attachments.account": f"{_API_ROOT}/accounts/{{attachments.account}}",
    "attachments.task": f"{_API_ROOT}/task_management/tasks/{{attachments.target.id}}",
    "attachments.task_comment": f"{_API_ROOT}/task_management/task_comments/{{attachments.target.id}}",
    "attachments.template": f"{_API_ROOT}/task_management/templates/{{attachments.target.id}}",
    "attachments.user": f"{_API_ROOT}/users/{{attachments.created_by.id}}",
    "attachments.application": f"{_API_ROOT}/applications/{{attachments.created_by.id}}",
}

# The native create fields an error may name -> the BookingSync field the client sent.
_PROFILE_FIELDS = {"data": "remote_file", "file": "remote_file", "url": "remote_file_url"}
# Statuses of the native refusals of a client's input, answered as Rails answers a record that fails its
# validations: 422 with the attribute named.
_VALIDATION_STATUSES = frozenset({400, 413, 422})
# Attributes the native create derives from the bytes when the client gives none, as BookingSync's clients
# never do: a fault in them is a fault of the file sent.
_DERIVED_FIELDS = frozenset({"file", "data", "url", "filename", "name", "content_type", "size"})
_INDEXED = re.compile(r"attachments\[([0-9]{1,4})\]")
_ASCII_WHITESPACE = re.compile(r"[ \t\r\n\f\v]+")
_DIGITS = re.compile(r"[0-9]{1,18}")

PER_PAGE_DEFAULT = 100
PER_PAGE_MAX = 100
MAX_IDS = 100


# -- errors ---------------------------------------------------------------------------------------------


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


# -- the account ----------------------------------------------------------------------------------------


def account_number(who: Principal) -> int:
    """The integer ``account`` BookingSync clients expect: an API key's ``account`` binding, else the
    account id itself when it is a number. Other accounts cannot use this profile."""
    bound = who.bindings.get("account")
    text = bound if bound is not None else who.account_id
    if not _DIGITS.fullmatch(text):
        raise ApiError(
            "account_not_numeric",
            "the bookingsync profile needs a numeric account id, or an API key bound to account=<integer>",
            status=403,
        )
    return int(text)


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


# -- the record and its envelope --------------------------------------------------------------------------


def _time(value: Any) -> str | None:
    """A time as the service writes it: ISO 8601 in UTC to the second (``2024-01-15T11:00:00Z``)."""
    if value is None:
        return None
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _actor_id(value: Any) -> int | str | None:
    """Users and applications have integer ids at BookingSync: a numeric actor id goes out as a number."""
    return int(value) if isinstance(value, str) and _DIGITS.fullmatch(value) else value


def attachment(record: Mapping[str, Any], account: int, fields: frozenset[str] | None = None) -> dict[str, Any]:
    """A native API record (``writes.record`` / the query service's ``render``) as BookingSync's attachment;
    ``fields`` limits the attributes (``id`` and ``links`` always stay), as the ``fields`` parameter does."""
    creator = record.get("created_by") or {}
    files = record.get("file") or {}
    shaped = {
        "links": {
            "account": account,
            "target": {"id": record.get("target_id"), "type": record.get("target_type")},
            "created_by": {"id": _actor_id(creator.get("id")), "type": creator.get("type")},
        },
        "id": str(record["id"]),
        "file": {"thumbnail": files.get("thumbnail"), "small": files.get("small"), "original": files.get("original")},
        "created_at": _time(record.get("created_at")),
        "updated_at": _time(record.get("updated_at")),
        "canceled_at": _time(record.get("canceled_at")),
    }
    if fields is not None:
        shaped = {k: v for k, v in shaped.items() if k in fields or k in ("id", "links")}
    return shaped


def envelope(attachments: Sequence[dict[str, Any]], meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"links": ENVELOPE_LINKS, "attachments": list(attachments), "meta": dict(meta or {})}


# -- reading: ids, list parameters, pagination ------------------------------------------------------------


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


def pagination_headers(url: URL, page: int, per_page: int, total: int) -> dict[str, str]:
    """The service's pagination headers: ``Link`` (first, prev, next, last), ``X-Total-Pages``,
    ``X-Total-Count`` and ``X-Per-Page``."""
    pages = math.ceil(total / per_page)
    last = max(pages, 1)

    def link(number: int, rel: str) -> str:
        return f'<{url.update_query(page=str(number), per_page=str(per_page))}>; rel="{rel}"'

    links = [link(1, "first")]
    if page > 1:
        links.append(link(min(page - 1, last), "prev"))
    if page < pages:
        links.append(link(page + 1, "next"))
    links.append(link(last, "last"))
    return {
        "Link": ", ".join(links),
        "X-Total-Pages": str(pages),
        "X-Total-Count": str(total),
        "X-Per-Page": str(per_page),
    }


def synced_at(now: dt.datetime) -> str:
    """``X-Updated-Since-Request-Synced-At``: the time to send as the next ``updated_since``."""
    return now.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
