"""Query routes: list, count, get. Read-only; every statement is scoped by the caller's account."""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from services.core import listing, records, repository, signing
from services.core.auth import READ
from services.core.errors import bad_request, not_found
from services.web.engines import POOL
from services.web.http import SETTINGS, base_url, json_response, principal

LIST_PARAMS = frozenset({"target_type", "target_id", "order_by", "limit", "cursor", "include_canceled",
                         "available"})


def attachment_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise not_found() from None


def render(request: web.Request, rows) -> list[dict[str, Any]]:
    settings = request.app[SETTINGS]
    expires = signing.expiry(time.time(), settings.link_ttl_s)
    base, secret = base_url(request), settings.link_secret
    return [records.to_api(r, base_url=base, secret=secret, expires=expires) for r in rows]


def _list_filter(request: web.Request, account_id: str, allowed: frozenset[str]) -> repository.ListFilter:
    q = request.query
    for key in q:
        if key not in allowed:
            raise bad_request("unknown_parameter", f"{key} is not a parameter of this route", key)
    if ("target_id" in q) and ("target_type" not in q):
        raise bad_request("missing_field", "target_id needs target_type", "target_type")
    return repository.ListFilter(
        account_id=account_id,
        target_type=q.get("target_type"),
        target_id=q.get("target_id"),
        include_canceled=listing.parse_bool(q.get("include_canceled"), "include_canceled"),
        available_only=listing.parse_bool(q.get("available"), "available"),
    )


async def list_attachments(request: web.Request) -> web.Response:
    who = principal(request, READ)
    f = _list_filter(request, who.account_id, LIST_PARAMS)
    order = listing.parse_order_by(request.query.get("order_by"))
    limit = listing.parse_limit(request.query.get("limit"))
    async with request.app[POOL].acquire() as conn:
        rows, next_cursor = await repository.list_attachments(conn, f, order, limit, request.query.get("cursor"))
    return json_response({"attachments": render(request, rows), "next_cursor": next_cursor})


async def count_attachments(request: web.Request) -> web.Response:
    who = principal(request, READ)
    f = _list_filter(request, who.account_id, LIST_PARAMS - {"order_by", "limit", "cursor"})
    async with request.app[POOL].acquire() as conn:
        count = await repository.count_attachments(conn, f)
    return json_response({"count": count})


async def get_attachment(request: web.Request) -> web.Response:
    who = principal(request, READ)
    include_canceled = listing.parse_bool(request.query.get("include_canceled"), "include_canceled")
    async with request.app[POOL].acquire() as conn:
        row = await repository.get_attachment(conn, who.account_id, attachment_id(request),
                                              include_canceled=include_canceled)
    if row is None:
        raise not_found()
    return json_response(render(request, [row])[0])
