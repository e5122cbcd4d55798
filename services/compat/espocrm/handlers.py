"""The EspoCRM profile's routes: each reads its request, translates it, and lets the native core do the work."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from services.compat.common import finished, profile_errors
from services.compat.espocrm import translate
from services.compat.espocrm.credentials import credential
from services.compat.espocrm.fields import ATTACHMENT_FIELDS
from services.core import listing, repository
from services.core.auth import READ, WRITE, Principal
from services.core.contract import AttachmentRef, Ingested, LinksSet, PutTargetJob, SetLinksJob
from services.core.errors import ApiError, bad_request, not_found
from services.core.repository import targets
from services.core.validation import parse_parent
from services.ingress.handlers import CreateOptions, accept_create, job_base, submit_mutation
from services.query.downloads import serve
from services.web.engines import POOL
from services.web.http import SETTINGS, authenticate, json_response, read_json

PROFILE = "espocrm"
RECORD_BODY_MAX = 256 * 1024
_BY_SEQ = listing.parse_order_by("seq")


def render(exc: ApiError) -> web.Response:
    error = translate.espo_error(exc)
    headers = {"X-Status-Reason": error.reason}
    if error.body is None:
        return web.Response(status=error.status, headers=headers)
    return json_response(error.body, status=error.status, headers=headers)


espo_errors = profile_errors(render)


async def _caller(request: web.Request, scope: str) -> Principal:
    return await authenticate(request, credential(request.headers), scope, profile=PROFILE)


@espo_errors
async def upload(request: web.Request) -> web.Response:
    """``POST Attachment``: the upload waits, unlinked, for the record that names it."""
    who = await _caller(request, WRITE)
    body = await read_json(request, max_bytes=request.app[SETTINGS].max_json_bytes)
    native = translate.upload_body(body)
    outcome = await finished(request, await accept_create(request, who, CreateOptions(json_body=native)))
    assert isinstance(outcome, Ingested)  # a create's job answers with its attachments
    return json_response(translate.attachment_attributes(msgspec.structs.asdict(outcome.attachments[0])))


async def _readable_attachment(request: web.Request) -> Mapping[str, Any]:
    """The caller's attachment named in the path; anything else is a 404."""
    who = await _caller(request, READ)
    try:
        ident = uuid.UUID(request.match_info["id"])
    except ValueError:
        raise not_found() from None
    async with request.app[POOL].acquire() as conn:
        row = await repository.get_attachment(conn, who.account_id, ident)
    if row is None:
        raise not_found()
    return row


@espo_errors
async def download(request: web.Request) -> web.StreamResponse:
    """``GET Attachment/file/{id}``: the bytes as stored, with their type, to be saved."""
    return await serve(request, await _readable_attachment(request), "original", download=True)


@espo_errors
async def read_attachment(request: web.Request) -> web.Response:
    """``GET Attachment/{id}``: EspoCRM's read of the record, to see where an upload is linked."""
    return json_response(translate.attachment_attributes(await _readable_attachment(request)))


def _entity_type(request: web.Request) -> str:
    return request.match_info["entity_type"]


def _record_id(request: web.Request) -> str:
    """The record id in the path, held to the rules of a target id; anything else names no record."""
    try:
        target = parse_parent({"type": _entity_type(request), "id": request.match_info["id"]}, "id")
    except ApiError:
        raise not_found(_entity_type(request)) from None
    assert target is not None  # both given
    return target[1]


def _without_idempotency_key(request: web.Request) -> web.Request:
    """A record write runs more than one job and EspoCRM has no Idempotency-Key: each job is its own. (A
    request is cloned before its body is read.)"""
    if "Idempotency-Key" not in request.headers:
        return request
    headers = request.headers.copy()
    del headers["Idempotency-Key"]
    return request.clone(headers=headers)


@espo_errors
async def create_record(request: web.Request) -> web.Response:
    """``POST Note`` / ``POST Document``: a new record of that type, with its attachment fields linked."""
    request = _without_idempotency_key(request)
    who = await _caller(request, WRITE)
    entity_type = _entity_type(request)
    write = translate.record_write(entity_type, await read_json(request, max_bytes=RECORD_BODY_MAX))
    wanted = {f: translate.attachment_uuids(ids, write.keys[f]) for f, ids in write.links.items()}
    await _check_free(request, who, entity_type, write, wanted)
    record_id = translate.new_record_id()
    await _place(request, who, entity_type, record_id)
    return await _link_and_answer(request, who, entity_type, record_id, write, wanted)


@espo_errors
async def update_record(request: web.Request) -> web.Response:
    """``PUT Note/{id}`` / ``PUT Document/{id}``: a given attachment field becomes exactly what it lists."""
    request = _without_idempotency_key(request)
    who = await _caller(request, WRITE)
    entity_type, record_id = _entity_type(request), _record_id(request)
    write = translate.record_write(entity_type, await read_json(request, max_bytes=RECORD_BODY_MAX))
    wanted = {f: translate.attachment_uuids(ids, write.keys[f]) for f, ids in write.links.items()}
    async with request.app[POOL].acquire() as conn:
        standing = await targets.target_standing(conn, who.account_id, entity_type, record_id)
    if standing is None:
        raise not_found(entity_type)
    if standing == "holding" and wanted:  # known by its attachments only: unlinking them all must not forget it
        await _place(request, who, entity_type, record_id)
    return await _link_and_answer(request, who, entity_type, record_id, write, wanted)


async def _place(request: web.Request, who: Principal, entity_type: str, record_id: str) -> None:
    """Register the record as a target of the account, so that it stays known with no attachment on it."""
    job = PutTargetJob(**job_base(request, who), target_type=entity_type, target_id=record_id)
    await finished(request, await submit_mutation(request, job))


async def _link_and_answer(
    request: web.Request,
    who: Principal,
    entity_type: str,
    record_id: str,
    write: translate.RecordWrite,
    wanted: Mapping[str, list[uuid.UUID]],
) -> web.Response:
    """Set each attachment field the write gives, then answer with the record as it now is (a field just
    set in the order it was given)."""
    written = {}
    for target_field, ids in wanted.items():
        written[target_field] = await _set_links(
            request, who, entity_type, record_id, target_field, ids, write.keys[target_field]
        )
    linked = {**await _linked(request, who, entity_type, record_id), **written}
    return json_response(translate.record_attributes(entity_type, record_id, write.given, linked))


async def _check_free(
    request: web.Request,
    who: Principal,
    entity_type: str,
    write: translate.RecordWrite,
    wanted: Mapping[str, list[uuid.UUID]],
) -> None:
    """A new record takes only uploads still free for its type: refused before anything is made."""
    every = [ident for ids in wanted.values() for ident in ids]
    if not every:
        return
    async with request.app[POOL].acquire() as conn:
        rows = {row["id"]: row for row in await repository.get_attachments(conn, who.account_id, every)}
    for target_field, ids in wanted.items():
        index = translate.unlinkable(rows, ids, entity_type)
        if index is not None:
            key = write.keys[target_field]
            why = "does not exist" if ids[index] not in rows else "is linked to another record"
            raise bad_request("invalid_link", f"attachment {ids[index]} {why}", f"{key}[{index}]")


async def _set_links(
    request: web.Request,
    who: Principal,
    entity_type: str,
    record_id: str,
    target_field: str,
    ids: list[uuid.UUID],
    key: str,
) -> list[dict[str, Any]]:
    refs: list[AttachmentRef] = list(ids)
    job = SetLinksJob(
        **job_base(request, who), target_type=entity_type, target_id=record_id, field=target_field, ids=refs
    )
    try:
        outcome = await finished(request, await submit_mutation(request, job))
    except ApiError as exc:  # the job names the list it was given as ids
        if exc.field is not None and exc.field.startswith("ids"):
            exc.field = key + exc.field[len("ids") :]
        raise
    assert isinstance(outcome, LinksSet)
    return [msgspec.structs.asdict(row) for row in outcome.attachments]


async def _linked(request: web.Request, who: Principal, entity_type: str, record_id: str) -> dict[str, list[Any]]:
    """The record's attachments now, by field, oldest first."""
    f = repository.ListFilter(account_id=who.account_id, target_type=entity_type, target_id=record_id)
    by_field: dict[str, list[Any]] = {name: [] for name in ATTACHMENT_FIELDS.get(entity_type, {})}
    cursor: str | None = None
    async with request.app[POOL].acquire() as conn:
        while True:
            rows, cursor = await repository.list_attachments(conn, f, _BY_SEQ, listing.MAX_LIMIT, cursor)
            for row in rows:
                by_field.setdefault(row["field"], []).append(row)
            if cursor is None:
                return by_field


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    api = f"{prefix}/api/v1"
    records = "|".join(ATTACHMENT_FIELDS)
    router.add_post(f"{api}/Attachment", upload)
    router.add_get(f"{api}/Attachment/{{id}}", read_attachment)
    router.add_get(f"{api}/Attachment/file/{{id}}", download)
    router.add_post(f"{api}/{{entity_type:(?:{records})}}", create_record)
    router.add_put(f"{api}/{{entity_type:(?:{records})}}/{{id}}", update_record)
