"""BookingSync's ``/api/v3/task_management/attachments[/:id]``: authenticate, translate (``inputs``,
``answers``, ``errors``), and call the native create, the native cancel job and the query service's
repository."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import orjson
from aiohttp import web
from yarl import URL

from services.compat.bookingsync import answers, errors, inputs
from services.compat.common import profile_errors
from services.core import repository
from services.core.auth import READ, WRITE, Principal
from services.core.contract import Canceled, CancelJob, Failed, Ingested
from services.core.errors import ApiError, not_found
from services.core.querylang import compile_filter
from services.core.records import API_COLUMNS
from services.ingress import writes
from services.ingress.handlers import CreateOptions, accept_create, job_base, submit_mutation
from services.query.handlers import render
from services.web import credentials
from services.web.engines import POOL
from services.web.http import SETTINGS, authenticate, own_url, read_json

PROFILE = "bookingsync"
# More than any account has deleted between two syncs in practice; the list stays one statement.
MAX_DELETED_IDS = 10_000


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    encoded = orjson.dumps(body, option=orjson.OPT_UTC_Z)
    return web.Response(body=encoded, status=status, headers=headers, content_type=answers.RESPONSE_TYPE)


def render_error(exc: ApiError) -> web.Response:
    status, body = errors.error_body(exc)
    return respond(body, status)


async def _caller(request: web.Request, scope: str) -> tuple[Principal, int]:
    """The caller (a bearer token or API key, as BookingSync's OAuth clients send it) and its integer account."""
    who = await authenticate(request, credentials.bearer(request.headers), scope, profile=PROFILE)
    return who, answers.account_number(who)


def _filter(account_id: str, nodes: list[dict[str, Any]], *, include_canceled: bool = False) -> repository.QueryFilter:
    return repository.QueryFilter(account_id, compile_filter(nodes), include_canceled=include_canceled)


@profile_errors(render_error)
async def list_attachments(request: web.Request) -> web.Response:
    who, account = await _caller(request, READ)
    params = inputs.parse_list_params(request.query)
    now = dt.datetime.now(dt.UTC)  # before the reads: a change made while they run is in the next sync
    live = _filter(who.account_id, inputs.list_filter(params))
    async with request.app[POOL].acquire() as conn:
        total = await repository.count_query(conn, live)
        rows, _ = await repository.query_attachments(
            conn, live, params.per_page, None, columns=API_COLUMNS, offset=params.offset
        )
        meta: dict[str, Any] = {}
        if params.updated_since is not None:
            gone = _filter(who.account_id, inputs.deleted_filter(params.updated_since), include_canceled=True)
            deleted, _ = await repository.query_attachments(conn, gone, MAX_DELETED_IDS, None, columns="id")
            meta["deleted_ids"] = [str(r["id"]) for r in deleted]
    items = [answers.attachment(r, account, params.fields) for r in render(request, rows)]
    here = URL(own_url(request) + request.rel_url.path_qs)  # as the client reached it, behind any proxy
    headers = answers.pagination_headers(here, params.page, params.per_page, total)
    headers["X-Updated-Since-Request-Synced-At"] = answers.synced_at(now)
    return respond(answers.envelope(items, meta), headers=headers)


@profile_errors(render_error)
async def get_attachments(request: web.Request) -> web.Response:
    """One attachment, or several as ``:id`` = ``id1,id2``; 404 when none is this account's."""
    who, account = await _caller(request, READ)
    ids = inputs.parse_ids(request.match_info["id"])
    if ids is None:
        raise not_found()
    fields = inputs.parse_fields(request.query)
    found = _filter(who.account_id, inputs.list_filter(inputs.ListParams(), ids))
    async with request.app[POOL].acquire() as conn:
        rows, _ = await repository.query_attachments(conn, found, len(ids), None, columns=API_COLUMNS)
    if not rows:
        raise not_found()
    items = [answers.attachment(r, account, fields) for r in render(request, rows)]
    return respond(answers.envelope(items))


@profile_errors(render_error)
async def create_attachments(request: web.Request) -> web.Response:
    who, account = await _caller(request, WRITE)
    settings = request.app[SETTINGS]
    body = await read_json(request, max_bytes=settings.max_json_bytes, media_types=answers.MEDIA_TYPES)
    native = inputs.native_create(body)
    try:
        job_id = await accept_create(request, who, CreateOptions(json_body=native))
    except ApiError as exc:
        raise errors.create_refusal(exc, [], native) from None
    # Prefer: respond-async (RFC 7240) answers at once, as native creates do.
    outcome = None if writes.wants_async(request) else await writes.outcome_of(request, job_id)
    match outcome:
        case Ingested(attachments=rows):
            items = [answers.attachment(writes.record(request, row), account) for row in rows]
            return respond(answers.envelope(items), status=201)
        case Failed(error=info, errors=item_errors):
            raise errors.create_refusal(ApiError.from_info(info), item_errors, native)
        case None:  # still being processed: accepted, to be read with GET once done (meta says where to look)
            return respond(answers.envelope([], {"id": job_id, "status_url": writes.status_url(job_id)}), status=202)
    raise TypeError("a create's job answers Ingested or Failed")


@profile_errors(render_error)
async def cancel_attachment(request: web.Request) -> web.Response:
    """Soft delete: ``canceled_at`` is set, the attachment leaves the lists and its GET is 404."""
    who, _ = await _caller(request, WRITE)
    try:
        attachment_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        raise not_found() from None
    async with request.app[POOL].acquire() as conn:
        row = await repository.get_attachment(conn, who.account_id, attachment_id, columns="target_type")
    if row is None or row["target_type"] not in answers.TARGET_TYPES:
        raise not_found()
    job_id = await submit_mutation(request, CancelJob(**job_base(request, who), attachment_id=attachment_id))
    match await writes.outcome_of(request, job_id):
        case Canceled():
            return web.Response(status=204)
        case Failed(error=info):
            raise ApiError.from_info(info)
        case None:
            return web.Response(status=202)
    raise TypeError("a cancel's job answers Canceled or Failed")


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    base = f"{prefix}/api/v3/task_management/attachments"
    router.add_get(base, list_attachments, allow_head=False)
    router.add_post(base, create_attachments)
    router.add_get(base + "/{id}", get_attachments, allow_head=False)
    router.add_delete(base + "/{id}", cancel_attachment)
