"""The Autotask routes: authenticate as Autotask clients do, translate, call the native core, render.

Creates go through the ingress's ``accept_create``, deletes through ``submit_mutation`` (a CancelJob), and
both answer from the job's outcome; reads call the repository with the caller's account.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from services.compat.autotask import entities, paging, translate
from services.compat.autotask.entities import Parent
from services.compat.common import finished, profile_errors
from services.core import budget, hierarchy, listing, querylang, repository
from services.core.auth import READ, WRITE, Principal
from services.core.contract import Canceled, CancelJob, Ingested
from services.core.errors import ApiError
from services.core.records import COLUMNS
from services.ingress.handlers import CreateOptions, accept_create, job_base, submit_mutation
from services.web import credentials
from services.web.engines import POOL, STORAGE
from services.web.http import SETTINGS, authenticate, json_response, own_url, read_json

ROOT = "/atservicesrest/v1.0"
_MAX_QUERY_BYTES = 256 * 1024
_BY_SEQ = (listing.SortKey("seq", False),)


def render_error(exc: ApiError) -> web.Response:
    return json_response(translate.error_body(exc), status=exc.status)


autotask_errors = profile_errors(render_error)


# -- who is calling --------------------------------------------------------------------------------------


async def caller(request: web.Request, scope: str) -> tuple[Principal, str]:
    """The principal of the ``Secret`` header and the ``ApiIntegrationCode`` the call is made for. A key
    bound to an integration code or a user name (``--bind integration=...,username=...``) takes only those."""
    code = credentials.header(request.headers, "ApiIntegrationCode")
    if code is None:
        raise translate.error("The ApiIntegrationCode header is required", status=401)
    if len(code) > 100 or not code.isprintable():
        raise translate.error("The ApiIntegrationCode header is not a valid integration code", status=401)
    who = await authenticate(request, credentials.header(request.headers, "Secret"), scope, profile="autotask")
    if (bound := who.bindings.get("integration")) is not None and bound != code:
        raise translate.error("This credential is not valid for this ApiIntegrationCode", status=401)
    user = credentials.header(request.headers, "UserName") or ""
    if (bound := who.bindings.get("username")) is not None and bound.casefold() != user.casefold():
        raise translate.error("This credential is not valid for this UserName", status=401)
    return who, code


def create_options(body: dict[str, Any], integration: str) -> CreateOptions:
    """The native create of a translated body, held to Autotask's limits: 7 MB per file and a window of
    10,000,000 bytes per 5 minutes, then 5 minutes of refusals, for each integration code of the account."""
    policy = budget.Policy(
        subject=f"integration:{integration}",
        byte_budget=entities.WINDOW_BYTES,
        window_s=entities.WINDOW_S,
        lockout_s=entities.LOCKOUT_S,
        max_file_bytes=entities.MAX_FILE_BYTES,
    )
    return CreateOptions(json_body=body, budget=policy)


# -- the parent in the path ------------------------------------------------------------------------------


def _collection(request: web.Request) -> Parent:
    parent = entities.BY_COLLECTION.get(request.match_info["collection"])
    if parent is None:
        raise translate.error(f"{request.match_info['collection'][:60]} has no attachments", status=404)
    return parent


def _entity(request: web.Request) -> Parent:
    parent = entities.BY_ENTITY.get(request.match_info["entity"])
    if parent is None:
        raise translate.error(f"There is no entity {request.match_info['entity'][:60]}", status=404)
    return parent


def _page_url(request: web.Request, tail: str) -> str:
    """The absolute URL of ``tail`` under the root this request came in by (the profile's mount point)."""
    root = request.path[: request.path.index(ROOT) + len(ROOT)]
    return f"{own_url(request)}{root}/{tail}"


# -- reads -----------------------------------------------------------------------------------------------


async def _uuids_of(conn: asyncpg.Connection, account: str, seqs: Iterable[int]) -> dict[int, uuid.UUID]:
    """The UUIDs of the account's live attachments with these integer ids (a filter's parentAttachmentID)."""
    wanted, found = sorted(set(seqs)), {}
    for start in range(0, len(wanted), querylang.MAX_LIST):
        chunk = wanted[start : start + querylang.MAX_LIST]
        condition = querylang.compile_filter([{"field": "seq", "op": "in", "value": chunk}])
        rows, _ = await repository.query_attachments(conn, repository.QueryFilter(account, condition), len(chunk), None)
        found.update({r["seq"]: r["id"] for r in rows})
    return found


async def _by_seq(conn: asyncpg.Connection, account: str, seq: int) -> asyncpg.Record:
    row = await repository.get_attachment(conn, account, seq)
    if row is None:
        raise translate.error(f"No attachment with id {seq} was found", status=404)
    return row


async def _items(conn: asyncpg.Connection, account: str, rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """The AttachmentInfo items of rows, with the integer ids of the attachments they hang under."""
    parents = translate.nested_parents(rows)
    seqs = await repository.seqs_of(conn, account, list(parents)) if parents else {}
    return [translate.item(r, seqs) for r in rows]


def _search_of(request: web.Request) -> tuple[Any, dict[str, str]]:
    """A GET query's ``search`` parameter (URL-encoded JSON), and the parameters its page URLs repeat."""
    search = request.query.get("search")
    if search is None:
        raise translate.error("search is required: the query as JSON", field="search")
    try:
        return orjson.loads(search), {"search": search}
    except orjson.JSONDecodeError:
        raise translate.error("search is not valid JSON", field="search") from None


async def _query_body(request: web.Request) -> tuple[Any, dict[str, str]]:
    if request.method == "GET":
        return _search_of(request)
    body = await read_json(request, max_bytes=_MAX_QUERY_BYTES)
    return body, {"search": orjson.dumps(body).decode()}


async def _native_query(
    conn: asyncpg.Connection, account: str, body: Any, scope: Parent | None
) -> tuple[translate.Query, querylang.QueryRequest]:
    query = translate.parse_query(body)
    refs = await _uuids_of(conn, account, translate.attachment_refs(query.filter))
    native = {"filter": translate.native_filter(query.filter, refs, scope), "max_records": query.max_records}
    return query, querylang.parse_query_request(native)


def _scope(request: web.Request) -> Parent | None:
    """The parent an ``<Entity>Attachments`` route is limited to; None for AttachmentInfo."""
    return _entity(request) if "entity" in request.match_info else None


@autotask_errors
async def run_query(request: web.Request) -> web.Response:
    """``AttachmentInfo/query`` and ``<Entity>Attachments/query`` (GET with ``search``, POST, ``/next``)."""
    who, _ = await caller(request, READ)
    scope = _scope(request)
    name = "AttachmentInfo" if scope is None else scope.entity
    body, params = await _query_body(request)
    current = paging.decode(request.query.get("paging"))
    async with request.app[POOL].acquire() as conn:
        query, native = await _native_query(conn, who.account_id, body, scope)
        rows, next_cursor = await repository.query_attachments(
            conn, repository.QueryFilter(who.account_id, native.filter), native.max_records, current.cursor
        )
        items = [translate.only(i, query.include_fields) for i in await _items(conn, who.account_id, rows)]
    details = paging.page_details(
        _page_url(request, f"{name}/query/next"), params, current, next_cursor, len(items), query.max_records
    )
    return json_response({"items": items, "pageDetails": details})


@autotask_errors
async def run_count(request: web.Request) -> web.Response:
    """``.../query/count`` (GET with ``search``, POST): ``{"queryCount": n}``."""
    who, _ = await caller(request, READ)
    scope = _scope(request)
    body, _ = await _query_body(request)
    async with request.app[POOL].acquire() as conn:
        _, native = await _native_query(conn, who.account_id, body, scope)
        count = await repository.count_query(conn, repository.QueryFilter(who.account_id, native.filter))
    return json_response({"queryCount": count})


@autotask_errors
async def info_get(request: web.Request) -> web.Response:
    who, _ = await caller(request, READ)
    seq = translate.parse_id(request.match_info["id"], "attachment")
    async with request.app[POOL].acquire() as conn:
        row = await _by_seq(conn, who.account_id, seq)
        (item,) = await _items(conn, who.account_id, [row])
    return json_response({"item": item})


@autotask_errors
async def entity_get(request: web.Request) -> web.Response:
    """``TicketAttachments/{id}``: the attachment with its bytes, if it is one of that entity's."""
    who, _ = await caller(request, READ)
    parent = _entity(request)
    seq = translate.parse_id(request.match_info["id"], "attachment")
    return await _with_data(request, who, seq, lambda row: row["target_type"] == parent.native_type)


async def _with_data(request: web.Request, who: Principal, seq: int, belongs: Any) -> web.Response:
    """``{"items": [item]}`` with ``data``, the file's bytes in base64 (null for a link), as Autotask answers
    for one attachment of a parent."""
    async with request.app[POOL].acquire() as conn:
        row = await _by_seq(conn, who.account_id, seq)
        if not belongs(row):
            raise translate.error(f"No attachment with id {seq} was found", status=404)
        (item,) = await _items(conn, who.account_id, [row])
    data = None
    if row["storage_key"]:
        data = base64.b64encode(await request.app[STORAGE].get_bytes(row["storage_key"])).decode("ascii")
    return json_response({"items": [{**item, "data": data}]})


@autotask_errors
async def fields(request: web.Request) -> web.Response:
    await caller(request, READ)
    return json_response({"fields": entities.describe_fields()})


@autotask_errors
async def entity_information(request: web.Request) -> web.Response:
    await caller(request, READ)
    scope = _scope(request)
    return json_response(entities.entity_information("AttachmentInfo" if scope is None else scope.entity))


# -- a parent's child collection -------------------------------------------------------------------------


def _parent_node(request: web.Request) -> tuple[Parent, int, str]:
    parent = _collection(request)
    parent_id = translate.parse_id(request.match_info["parent_id"], parent.label)
    return parent, parent_id, hierarchy.node(parent.native_type, str(parent_id))


@autotask_errors
async def child_list(request: web.Request) -> web.Response:
    """``GET /Tickets/{id}/Attachments``: the ticket's own attachments, 500 a page, in id order."""
    who, _ = await caller(request, READ)
    parent, parent_id, _ = _parent_node(request)
    current = paging.decode(request.query.get("paging"))
    f = repository.ListFilter(who.account_id, target_type=parent.native_type, target_id=str(parent_id))
    async with request.app[POOL].acquire() as conn:
        rows, next_cursor = await repository.list_attachments(
            conn, f, _BY_SEQ, translate.MAX_RECORDS, current.cursor, columns=COLUMNS
        )
        items = await _items(conn, who.account_id, rows)
    url = _page_url(request, f"{parent.collection}/{parent_id}/Attachments")
    details = paging.page_details(url, {}, current, next_cursor, len(items), translate.MAX_RECORDS)
    return json_response({"items": items, "pageDetails": details})


@autotask_errors
async def child_get(request: web.Request) -> web.Response:
    who, _ = await caller(request, READ)
    _, _, node = _parent_node(request)
    seq = translate.parse_id(request.match_info["id"], "attachment")
    return await _with_data(request, who, seq, lambda row: node in (row["ancestors"] or ()))


@autotask_errors
async def child_create(request: web.Request) -> web.Response:
    """``POST /Tickets/{id}/Attachments``: ``{"itemId": <id>}`` once the attachment is committed."""
    who, integration = await caller(request, WRITE)
    parent, parent_id, _ = _parent_node(request)
    new = translate.parse_create(
        parent, parent_id, await read_json(request, max_bytes=request.app[SETTINGS].max_json_bytes)
    )
    job_id = await accept_create(request, who, create_options(translate.native_create(new), integration))
    outcome = await finished(request, job_id)
    assert isinstance(outcome, Ingested)
    return json_response({"itemId": outcome.attachments[0].seq})


@autotask_errors
async def child_delete(request: web.Request) -> web.Response:
    """``DELETE /Tickets/{id}/Attachments/{attachmentId}``: ``{"itemId": <id>}``."""
    who, _ = await caller(request, WRITE)
    _, _, node = _parent_node(request)
    seq = translate.parse_id(request.match_info["id"], "attachment")
    async with request.app[POOL].acquire() as conn:
        row = await _by_seq(conn, who.account_id, seq)
    if node not in (row["ancestors"] or ()):
        raise translate.error(f"No attachment with id {seq} was found", status=404)
    job = CancelJob(**job_base(request, who), attachment_id=row["id"])
    outcome = await finished(request, await submit_mutation(request, job))
    assert isinstance(outcome, Canceled)
    return json_response({"itemId": outcome.attachment.seq})


# -- what Autotask refuses -------------------------------------------------------------------------------


@autotask_errors
async def no_update(request: web.Request) -> web.Response:
    raise translate.error(translate.UPDATE_REFUSED, status=405)


@autotask_errors
async def query_only(request: web.Request) -> web.Response:
    _scope(request)  # an unknown entity is not found
    raise translate.error(translate.QUERY_ONLY, status=405)


@autotask_errors
async def unknown(request: web.Request) -> web.Response:
    raise translate.error(f"No resource at {request.path[:200]}", status=404)


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    base = prefix + ROOT
    add = router.add_route
    info = f"{base}/AttachmentInfo"
    add("GET", f"{info}/query", run_query)
    add("GET", f"{info}/query/next", run_query)
    add("POST", f"{info}/query", run_query)
    add("GET", f"{info}/query/count", run_count)
    add("POST", f"{info}/query/count", run_count)
    add("GET", f"{info}/entityInformation", entity_information)
    add("GET", f"{info}/entityInformation/fields", fields)
    add("GET", info + "/{id}", info_get)
    add("POST", info, query_only)
    add("DELETE", info + "/{id}", query_only)
    for path in (info, info + "/{id}"):
        add("PATCH", path, no_update)
        add("PUT", path, no_update)

    children = base + "/{collection}/{parent_id}/Attachments"
    add("GET", children, child_list)
    add("POST", children, child_create)
    add("GET", children + "/{id}", child_get)
    add("DELETE", children + "/{id}", child_delete)
    for path in (children, children + "/{id}"):
        add("PATCH", path, no_update)
        add("PUT", path, no_update)

    entity = base + "/{entity}"
    add("GET", entity + "/query", run_query)
    add("GET", entity + "/query/next", run_query)
    add("POST", entity + "/query", run_query)
    add("GET", entity + "/query/count", run_count)
    add("POST", entity + "/query/count", run_count)
    add("GET", entity + "/entityInformation", entity_information)
    add("GET", entity + "/entityInformation/fields", fields)
    add("GET", entity + "/{id}", entity_get)
    add("POST", entity, query_only)
    add("DELETE", entity + "/{id}", query_only)
    for path in (entity, entity + "/{id}"):
        add("PATCH", path, no_update)
        add("PUT", path, no_update)
    add("*", base + "/{tail:.*}", unknown)
