"""What the bookingsync profile answers: BookingSync's attachment record, its envelope, the integer account,
the pagination headers. Pure."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from yarl import URL

from services.core.auth import Principal
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

_DIGITS = re.compile(r"[0-9]{1,18}")


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


# -- list headers -----------------------------------------------------------------------------------------


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
