"""The Toggl Focus task-attachment routes: authenticate, translate, and hand over to the native core (the
ingress's creates and jobs, the repository's reads)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from services.compat.common import JobFailed, finished, profile_errors
from services.compat.toggl import translate
from services.compat.toggl.translate import PROFILE, TaskPath
from services.core import listing, logs, repository
from services.core.auth import READ, WRITE, Principal
from services.core.contract import AnyOutcome, CancelJob, Ingested, UpdateJob
from services.core.errors import ApiError
from services.core.records import COLUMNS
from services.ingress.handlers import CreateOptions, accept_create, job_base, submit_mutation
from services.web.engines import POOL
from services.web.http import authenticate, json_response, list_params, read_json

BASE = "/api/organizations/{organization_id}/workspaces/{workspace_id}/tasks/{task_id}/attachments"


def render_error(error: ApiError) -> web.Response:
    body = translate.error_body(error, logs.get("request_id") or "")
    return json_response(body, status=error.status, headers=error.headers)


toggl_errors = profile_errors(render_error)


async def _caller(request: web.Request, scope: str) -> tuple[Principal, TaskPath]:
    """Who is calling, and the task of the path, which their key must be allowed on."""
    credential = translate.credential(request.headers)
    who = await authenticate(request, credential, scope, profile=PROFILE)
    path = translate.task_path(request.match_info)
    translate.check_bindings(who.bindings, path)
    return who, path


async def _attachment_on_task(request: web.Request, who: Principal, path: TaskPath) -> Any:
    """The live attachment of the path's id on the path's task, in the caller's account; else 404."""
    seq = translate.path_integer(request.match_info["attachment_id"], "attachment_id")
    async with request.app[POOL].acquire() as conn:
        row = await repository.get_attachment(conn, who.account_id, seq)
    if row is None or not translate.is_on_task(row, path):
        raise translate.not_found()
    return row


async def _finished(request: web.Request, job_id: str) -> AnyOutcome:
    """The job's outcome; a failure raised as the error it answers with, naming the files it refused."""
    try:
        return await finished(request, job_id)
    except JobFailed as failed:
        raise translate.with_file_errors(failed, ((e.index, e.filename, e.message) for e in failed.errors)) from None


def _items(outcome: AnyOutcome) -> list[dict[str, Any]]:
    assert isinstance(outcome, Ingested)  # the answer to an ingest job
    return [translate.item(msgspec.structs.asdict(row)) for row in outcome.attachments]


@list_params("order_by")
@toggl_errors
async def list_attachments(request: web.Request) -> web.Response:
    who, path = await _caller(request, READ)
    translate.check_list_query(request.query)
    order = translate.parse_order_by(request.query.getall("order_by", []))
    where = repository.ListFilter(who.account_id, target_type=translate.TARGET_TYPE, target_id=path.target_id)
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    async with request.app[POOL].acquire() as conn:
        while True:  # Toggl answers with every attachment of the task: page through them all
            rows, cursor = await repository.list_attachments(
                conn, where, order, listing.MAX_LIMIT, cursor, columns=COLUMNS
            )
            items += [translate.item(row) for row in rows]
            if cursor is None:
                break
    return json_response({"items": items})


@toggl_errors
async def create(request: web.Request) -> web.Response:
    who, path = await _caller(request, WRITE)
    translate.require_multipart(request.content_type)
    options = CreateOptions(form_fields=translate.single_form_fields(path), check_form=translate.check_single_form)
    outcome = await _finished(request, await accept_create(request, who, options))
    return json_response(_items(outcome)[0], status=201)


@toggl_errors
async def create_bulk(request: web.Request) -> web.Response:
    who, path = await _caller(request, WRITE)
    translate.require_multipart(request.content_type)
    options = CreateOptions(form_fields=translate.bulk_form_fields(path), check_form=translate.check_bulk_form)
    outcome = await _finished(request, await accept_create(request, who, options))
    return json_response({"items": _items(outcome)}, status=201)


@toggl_errors
async def update(request: web.Request) -> web.Response:
    who, path = await _caller(request, WRITE)
    changes = translate.parse_update(await read_json(request, max_bytes=64 * 1024))
    row = await _attachment_on_task(request, who, path)
    job = UpdateJob(**job_base(request, who), attachment_id=row["id"], changes=changes)
    await _finished(request, await submit_mutation(request, job))
    return web.Response(status=204)


@toggl_errors
async def delete(request: web.Request) -> web.Response:
    who, path = await _caller(request, WRITE)
    row = await _attachment_on_task(request, who, path)
    job = CancelJob(**job_base(request, who), attachment_id=row["id"])
    await _finished(request, await submit_mutation(request, job))
    return web.Response(status=204)


@toggl_errors
async def view(request: web.Request) -> web.Response:
    who, path = await _caller(request, READ)
    return json_response(translate.item(await _attachment_on_task(request, who, path)))


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    base = prefix + BASE
    router.add_get(base, list_attachments)
    router.add_post(base, create)
    router.add_post(f"{base}/bulk", create_bulk)
    router.add_put(base + "/{attachment_id}", update)
    router.add_delete(base + "/{attachment_id}", delete)
    router.add_get(base + "/{attachment_id}/view", view)
