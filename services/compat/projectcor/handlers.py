"""ProjectCor's task attachments: ``POST`` (upload one or many files) and ``GET`` (the task's files) on
``/v1/tasks/{task_id}/attachments``. Thin: the native create does the upload, the repository the reads;
``shapes`` translates."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from aiohttp import web

from services.compat.common import profile_errors
from services.compat.projectcor import shapes
from services.core import listing, repository, signing
from services.core.auth import READ, WRITE, Principal
from services.core.contract import AttachmentRow, Failed, Ingested, attachment_row
from services.core.errors import ApiError
from services.ingress.handlers import CreateOptions, accept_create
from services.ingress.writes import outcome_of, status_url
from services.web.credentials import bearer
from services.web.engines import POOL
from services.web.http import SETTINGS, authenticate, base_url, json_response

PROFILE = "projectcor"
PATH = "/v1/tasks/{task_id}/attachments"
# The GET reads the task's files in pages of this many.
PAGE = listing.MAX_LIMIT
BY_SEQ = listing.parse_order_by("seq")


def render_error(exc: ApiError) -> web.Response:
    return json_response(shapes.api_error_body(exc), status=exc.status, headers=exc.headers)


async def _caller(request: web.Request, scope: str) -> Principal:
    return await authenticate(request, bearer(request.headers), scope, profile=PROFILE)


def _task_id(request: web.Request) -> int:
    return shapes.parse_id(request.match_info["task_id"], "task_id")


@profile_errors(render_error)
async def upload(request: web.Request) -> web.Response:
    who = await _caller(request, WRITE)
    task_id = _task_id(request)
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(
            "unsupported_media_type", "send multipart/form-data with one or more file parts", field="file", status=415
        )
    form = shapes.UploadForm(task_id)
    job_id = await accept_create(request, who, CreateOptions(form_fields=form))
    outcome = await outcome_of(request, job_id)
    if outcome is None:  # not done within ATTACHD_SYNC_WAIT_S: the native status URL will say how it ended
        pending = {"message": "the upload is still being processed", "status_url": status_url(job_id)}
        return json_response(pending, status=202, headers={"Location": status_url(job_id)})
    if isinstance(outcome, Failed):
        parent = form.attachment_parent_id
        if parent is not None and not await _is_attachment(request, who, parent):
            raise shapes.unknown_parent(parent)  # another company's, a deleted one or none: 404 as for any id
        if (refused := shapes.request_failure(outcome.error, outcome.errors)) is not None:
            status, failed = refused
            return json_response(failed, status=status)
        _, files_q = await _files_and_count(request, who, task_id, [])
        return json_response(
            {"files": [], "files_q": files_q, "errors": [shapes.file_error(e) for e in outcome.errors]}
        )
    assert isinstance(outcome, Ingested)  # the outcome of an ingest job
    files, files_q = await _files_and_count(request, who, task_id, outcome.attachments)
    body: dict[str, object] = {"files": files, "files_q": files_q}
    if outcome.errors:  # "present only when individual files failed"
        body["errors"] = [shapes.file_error(e) for e in outcome.errors]
    return json_response(body)


@profile_errors(render_error)
async def list_files(request: web.Request) -> web.Response:
    """Not in the document: the task's files (latest versions, not deleted) in upload order, in the
    upload answer's shape."""
    who = await _caller(request, READ)
    task_id = _task_id(request)
    if request.query:
        name = next(iter(request.query))
        raise ApiError("unknown_parameter", f"{name} is not a parameter of this route", field=name)
    rows = await _rows_on_task(request, who, task_id)
    files, files_q = await _files_and_count(request, who, task_id, rows)
    return json_response({"files": files, "files_q": files_q})


async def _rows_on_task(request: web.Request, who: Principal, task_id: int) -> list[AttachmentRow]:
    """Every live, latest attachment on the task, oldest first (page after page)."""
    on_task, rows, cursor = _task_filter(who, task_id), [], None
    async with request.app[POOL].acquire() as conn:
        while True:
            page, cursor = await repository.list_attachments(conn, on_task, BY_SEQ, PAGE, cursor)
            rows += [attachment_row(r) for r in page]
            if cursor is None:
                return rows


async def _is_attachment(request: web.Request, who: Principal, seq: int) -> bool:
    async with request.app[POOL].acquire() as conn:
        return await repository.get_attachment(conn, who.account_id, seq) is not None


def _task_filter(who: Principal, task_id: int) -> repository.ListFilter:
    return repository.ListFilter(account_id=who.account_id, target_type=shapes.TARGET_TYPE, target_id=str(task_id))


async def _files_and_count(
    request: web.Request, who: Principal, task_id: int, rows: Sequence[AttachmentRow]
) -> tuple[list[dict[str, object]], int]:
    """The rows as ``files[]`` and the task's live count (the native ``/count`` of the task)."""
    seqs = {row.id: row.seq for row in rows}
    async with request.app[POOL].acquire() as conn:
        if missing := sorted(shapes.referenced_ids(rows) - set(seqs)):
            seqs |= await repository.seqs_of(conn, who.account_id, missing)
        files_q = await repository.count_attachments(conn, _task_filter(who, task_id))
    original, company = _original_links(request), shapes.company_id(who.account_id, who.bindings)
    files = [shapes.file_record(row, url=original(row), seqs=seqs, company=company) for row in rows]
    return files, files_q


def _original_links(request: web.Request) -> Callable[[AttachmentRow], str | None]:
    """The signed, expiring link to a row's bytes (None for a link attachment, which has none)."""
    settings = request.app[SETTINGS]
    expires = signing.expiry(time.time(), settings.link_ttl_s)
    signer = signing.LinkSigner(settings.link_secret, expires, base_url(request))

    def original(row: AttachmentRow) -> str | None:
        return signer.links(str(row.id), False, False)["original"] if row.storage_key else None

    return original


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    router.add_post(prefix + PATH, upload)
    router.add_get(prefix + PATH, list_files)
