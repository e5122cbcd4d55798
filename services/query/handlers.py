"""Query routes: list, count, get. Read-only; every statement is scoped by the caller's account."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from services.core import hierarchy, listing, logs, querylang, records, repository, signing
from services.core.auth import READ
from services.core.contract import AttachmentRef
from services.core.errors import bad_request, not_found
from services.core.fields import describe_fields
from services.core.records import API_COLUMNS
from services.core.validation import parse_target_filter, path_ref
from services.web.engines import POOL
from services.web.http import SETTINGS, base_url, json_response, principal, read_json

LIST_PARAMS = frozenset(
    {
        "target_type",
        "target_id",
        "descendants",
        "ancestor",
        "versions",
        "order_by",
        "limit",
        "cursor",
        "include_canceled",
        "available",
    }
)


def attachment_id(request: web.Request) -> AttachmentRef:
    """The attachment the path names, by id or integer id; looked up in the caller's account."""
    ref = path_ref(request.match_info["id"])
    if ref is None:
        raise not_found()
    logs.bind(attachment_id=str(ref))
    return ref


def render(request: web.Request, rows) -> list[dict[str, Any]]:
    """The API records of rows read with ``API_COLUMNS``, for ``json_response``."""
    settings = request.app[SETTINGS]
    expires = signing.expiry(time.time(), settings.link_ttl_s)
    return records.api_records(rows, base_url=base_url(request), secret=settings.link_secret, expires=expires)


def _list_filter(request: web.Request, account_id: str, allowed: frozenset[str]) -> repository.ListFilter:
    q = request.query
    for key in q:
        if key not in allowed:
            raise bad_request("unknown_parameter", f"{key} is not a parameter of this route", key)
    if ("target_id" in q) and ("target_type" not in q):
        raise bad_request("missing_field", "target_id needs target_type", "target_type")
    versions = q.get("versions", "latest")
    if versions not in ("latest", "all"):
        raise bad_request("invalid_value", "versions must be latest or all", "versions")
    target_type, target_id, ancestor = parse_target_filter(q.get("target_type"), q.get("target_id"), q.get("ancestor"))
    if listing.parse_bool(q.get("descendants"), "descendants"):
        if target_id is None:
            raise bad_request("missing_field", "descendants needs target_type and target_id", "target_id")
        assert target_type is not None  # target_id needs target_type, checked above
        ancestor = hierarchy.node(target_type, target_id)
    elif target_id is not None:
        ancestor = None  # an entity named outright wins over an ancestor, as in AttachmentInfo
    return repository.ListFilter(
        account_id=account_id,
        target_type=target_type,
        target_id=target_id,
        ancestor=ancestor,
        include_canceled=listing.parse_bool(q.get("include_canceled"), "include_canceled"),
        available=listing.parse_optional_bool(q.get("available"), "available"),
        all_versions=versions == "all",
    )


async def list_attachments(request: web.Request) -> web.Response:
    who = await principal(request, READ)
    f = _list_filter(request, who.account_id, LIST_PARAMS)
    order = listing.parse_order_by(request.query.get("order_by"))
    limit = listing.parse_limit(request.query.get("limit"))
    async with request.app[POOL].acquire() as conn:
        rows, next_cursor = await repository.list_attachments(
            conn, f, order, limit, request.query.get("cursor"), columns=API_COLUMNS
        )
    return json_response({"attachments": render(request, rows), "next_cursor": next_cursor})


async def count_attachments(request: web.Request) -> web.Response:
    who = await principal(request, READ)
    f = _list_filter(request, who.account_id, LIST_PARAMS - {"order_by", "limit", "cursor"})
    async with request.app[POOL].acquire() as conn:
        count = await repository.count_attachments(conn, f)
    return json_response({"count": count})


async def get_attachment(request: web.Request) -> web.Response:
    who = await principal(request, READ)
    include_canceled = listing.parse_bool(request.query.get("include_canceled"), "include_canceled")
    async with request.app[POOL].acquire() as conn:
        row = await repository.get_attachment(
            conn, who.account_id, attachment_id(request), include_canceled=include_canceled, columns=API_COLUMNS
        )
    if row is None:
        raise not_found()
    return json_response(render(request, [row])[0])


async def fields(request: web.Request) -> web.Response:
    await principal(request, READ)
    return json_response({"fields": describe_fields()})


def mentions(nodes: Any, field: str) -> bool:
    """Whether a filter tree has a condition on ``field`` anywhere."""
    if isinstance(nodes, list):
        return any(mentions(n, field) for n in nodes)
    if isinstance(nodes, dict):
        return nodes.get("field") == field or mentions(nodes.get("items"), field)
    return False


def _query_filter(
    body: Any, account_id: str, **parse_options: Any
) -> tuple[querylang.QueryRequest, repository.QueryFilter]:
    query = querylang.parse_query_request(body, **parse_options)
    # Canceled rows and old versions stay hidden unless the query asks about them.
    nodes = body.get("filter")
    return query, repository.QueryFilter(
        account_id,
        query.filter,
        include_canceled=mentions(nodes, "canceled_at"),
        all_versions=any(mentions(nodes, f) for f in ("version", "is_latest", "canceled_at")),
    )


async def query_attachments(request: web.Request) -> web.Response:
    who = await principal(request, READ)
    body = await read_json(request, max_bytes=256 * 1024)
    query, f = _query_filter(body, who.account_id)
    async with request.app[POOL].acquire() as conn:
        rows, next_cursor = await repository.query_attachments(
            conn, f, query.max_records, query.cursor, columns=API_COLUMNS
        )
    rendered = render(request, rows)
    if query.include_fields:
        keep = tuple(dict.fromkeys(("id", *map(records.record_key, query.include_fields))))
        rendered = [{k: r[k] for k in keep if k in r} for r in rendered]
    return json_response({"attachments": rendered, "next_cursor": next_cursor})


async def query_count(request: web.Request) -> web.Response:
    who = await principal(request, READ)
    body = await read_json(request, max_bytes=256 * 1024)
    _, f = _query_filter(body, who.account_id)
    async with request.app[POOL].acquire() as conn:
        count = await repository.count_query(conn, f)
    return json_response({"count": count})
