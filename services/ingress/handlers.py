"""Ingress routes: parse, authorize, stage bytes, queue the job, answer with its outcome."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import uuid_utils
from aiohttp import web

from services.core import budget, encoding, logs, storage
from services.core.auth import READ, WRITE, Principal
from services.core.contract import (
    Actor,
    AttachmentRef,
    Base64Source,
    CancelJob,
    CloseSessionJob,
    IngestItem,
    IngestJob,
    Job,
    LinkSource,
    Mode,
    NewAttachment,
    PutTargetJob,
    RejectedSource,
    SetLinksJob,
    StagedSource,
    TargetRef,
    UpdateJob,
    UrlSource,
)
from services.core.errors import ApiError, bad_request
from services.core.validation import (
    LINK_TYPES,
    coerce_form,
    parse_attachment_ref,
    parse_changes,
    parse_new_attachment,
    parse_parent,
    parse_session_token,
    path_ref,
)
from services.ingress import writes
from services.ingress.multipart import Form, raw_disposition_filename, read_form
from services.web.engines import BUDGET, STORAGE
from services.web.http import SETTINGS, principal, read_json, request_id

# base64 up to this size rides in the job itself; larger payloads are staged as objects.
INLINE_BASE64_CHARS = 1 << 20
MODES = ("atomic", "partial")
# A file's own name or display_order in a multipart form: name[0], display_orders[1]... (ASCII digits,
# at most as many as max_files_per_request could need).
_INDEXED = re.compile(r"(names?|display_orders?)\[([0-9]{1,4})\]")


# A raw upload's create fields (from its query string) and the file name its Content-Disposition gave.
RawFields = tuple[NewAttachment, str | None]


def new_id() -> str:
    return str(uuid_utils.uuid7())


def _attachment_id(request: web.Request) -> AttachmentRef:
    """The attachment the path names, by id or integer id (resolved in the caller's account by the worker)."""
    ref = path_ref(request.match_info["id"])
    if ref is None:
        raise ApiError("not_found", "attachment not found", status=404)
    logs.bind(attachment_id=str(ref))
    return ref


def _prefixed(exc: ApiError, prefix: str) -> ApiError:
    exc.field = f"{prefix}.{exc.field}" if exc.field else prefix
    return exc


def _mode(value: Any) -> Mode:
    if value is None:
        return "atomic"
    if value not in MODES:
        raise bad_request("invalid_value", "mode must be atomic or partial", "mode")
    mode: Mode = value  # one of MODES
    return mode


def _actor(who: Principal) -> Actor:
    return Actor(type=who.actor_type, id=who.actor_id)  # type: ignore[arg-type]  # a checked token claim


@dataclass
class Parsed:
    """A create request's items, validated, before they become the job."""

    items: list[IngestItem]
    many: bool = False
    mode: Mode = "atomic"


@dataclass(frozen=True)
class CreateOptions:
    """What a caller of ``accept_create`` other than the native route fixes about a create (a compat profile
    translating its own API): the JSON body it has already read and translated to the native fields, and a
    translation of a multipart form's fields (its own names to the native ones, the target from its path).
    Everything else (validation, limits, budget, idempotency, the job) is the native create's.
    ``check_form`` holds a multipart form to the profile's own rules on the whole of it (how many files,
    which per-file fields each needs) once it is read, before its fields are translated; what it raises
    answers the request, and nothing stays staged."""

    json_body: Any = None
    form_fields: Callable[[dict[str, str]], dict[str, str]] | None = None
    # The profile's own upload limits in place of the account's: its byte window, charged to the policy's
    # subject (e.g. an Autotask integration), and its per-file limit; None: the account's limits.
    budget: budget.Policy | None = None
    check_form: Callable[[Form], None] | None = None


NATIVE = CreateOptions()


async def create(request: web.Request) -> web.Response:
    who = await principal(request, WRITE)
    return await writes.respond(request, await accept_create(request, who))


async def accept_create(request: web.Request, who: Principal, options: CreateOptions = NATIVE) -> str:
    """Receive a create request and queue its ingest job; returns the id of the job whose outcome answers it
    (an earlier one for a retry with the same Idempotency-Key)."""
    upload_id = new_id()
    logs.bind(job_id=upload_id)
    claim = writes.idempotency_claim(request, who.account_id)  # a malformed Idempotency-Key: 400 before anything
    kind = _body_kind(request, options)
    raw = _raw_fields(request) if kind == "raw" else None  # a bad request costs no budget and no Redis
    # One round trip before the body is read: the Idempotency-Key, the account's limits and (multipart and
    # raw) the byte budget's charge. A refused upload leaves nothing behind, the claim included.
    admitted = await _admitted(request, who, upload_id, claim, kind, raw, options.budget)
    if isinstance(admitted, str):  # a retry: the first request's job answers it
        return admitted
    limits = admitted.limits
    try:
        async with (
            asyncio.timeout(request.app[SETTINGS].body_read_timeout_s),
            writes.claim_kept_alive(request, who.account_id),
        ):
            if kind == "multipart":
                parsed = await _from_multipart(request, upload_id, limits.max_file_bytes, options)
            elif kind == "raw":
                assert raw is not None
                parsed = await _from_raw(request, upload_id, limits.max_file_bytes, raw)
            else:
                parsed = await _from_json(request, limits.max_file_bytes, options.json_body)
                await request.app[BUDGET].admit(
                    request.app[SETTINGS],
                    who.account_id,
                    upload_id,
                    budget.base64_charge(parsed.items),
                    policy=options.budget,
                )
                await _stage_large_base64(request, upload_id, parsed.items)
        if not parsed.many:  # one attachment: its id is the upload's, so the status URL names it
            parsed.items[0].id = uuid.UUID(upload_id)
        job = IngestJob(
            job_id=upload_id,
            account_id=who.account_id,
            actor=_actor(who),
            request_id=request_id(request),
            mode=parsed.mode,
            many=parsed.many,
            max_file_bytes=limits.max_file_bytes,  # the worker holds the file to the same limit
            items=parsed.items,
        )
        await writes.submit(request, job, manifest=True)
    except TimeoutError:
        await _abandon(request, who, upload_id)
        raise ApiError("request_timeout", "the request body arrived too slowly", status=408) from None
    except BaseException:
        await _abandon(request, who, upload_id)
        raise
    return upload_id


async def _admitted(
    request: web.Request,
    who: Principal,
    upload_id: str,
    claim: tuple[str, int] | None,
    kind: str,
    raw: RawFields | None,
    policy: budget.Policy | None,
) -> budget.Admission | str:
    """The admission, or, when the Idempotency-Key is taken, the id of the job that answers the retry; once
    more when the key's first job failed on our side and the retry may run."""
    for _ in range(2):
        admission = await _admit(request, who, upload_id, claim, kind, raw, policy)
        if admission.earlier is None:
            return admission
        if (earlier := await writes.replayed_job(request, who.account_id, admission.earlier)) is not None:
            return earlier
    raise writes.key_in_use()  # two retries raced for a key whose first job failed


async def _abandon(request: web.Request, who: Principal, upload_id: str) -> None:
    """A create answered with an error leaves nothing: not its staged bytes or manifest (the sweeper would
    queue the job a retry has since made again), not its Idempotency-Key. Each on its own, best effort:
    the sweeper removes what stays, and a claim lapses."""
    with contextlib.suppress(Exception):
        await request.app[STORAGE].delete_prefix(storage.staging_prefix(upload_id))
    with contextlib.suppress(Exception):
        await writes.release_idempotency_key(request, who, upload_id)


def _body_kind(request: web.Request, options: CreateOptions) -> str:
    if options.json_body is not None:
        return "json"
    if request.content_type.startswith("multipart/"):
        return "multipart"
    return "raw" if is_raw_upload(request) else "json"


async def _admit(
    request: web.Request,
    who: Principal,
    upload_id: str,
    claim: tuple[str, int] | None,
    kind: str,
    raw: RawFields | None,
    policy: budget.Policy | None,
) -> budget.Admission:
    """Multipart and raw bodies are charged their Content-Length now; JSON once its base64 is decoded."""
    gate, settings, account = request.app[BUDGET], request.app[SETTINGS], who.account_id
    if kind == "json":
        return await gate.limits(settings, account, upload_id, claim=claim, policy=policy)
    length = request.content_length
    if kind == "multipart":
        return await gate.admit(
            settings, account, upload_id, length, claim=claim, what="a multipart upload", policy=policy
        )
    try:  # raw: the body is the file, so its declared length is held to the file limit too
        return await gate.admit(settings, account, upload_id, length, file_bytes=length, claim=claim, policy=policy)
    except budget.FileTooLarge as exc:
        assert raw is not None
        raise _too_large(raw, exc.limits.max_file_bytes) from None


async def _from_json(request: web.Request, max_file_bytes: int, body: Any = None) -> Parsed:
    settings = request.app[SETTINGS]
    if body is None:
        body = await read_json(request, max_bytes=settings.max_json_bytes)
    if isinstance(body, dict) and "attachments" in body:
        objects = body["attachments"]
        extra = set(body) - {"attachments", "mode"}
        if extra:
            raise bad_request("unknown_field", f"{sorted(extra)[0]} is not a field of a bulk request", sorted(extra)[0])
        if not isinstance(objects, list) or not objects:
            raise bad_request("invalid_value", "attachments must be a non-empty list", "attachments")
        if len(objects) > settings.max_files_per_request:
            raise bad_request(
                "too_many_files",
                f"at most {settings.max_files_per_request} attachments per request, not {len(objects)}",
                "attachments",
            )
        mode, many, prefix = _mode(body.get("mode")), True, "attachments[{}]"
    else:
        objects, mode, many, prefix = [body], _mode(None), False, "{}"
    items = []
    for index, obj in enumerate(objects):
        field_prefix = prefix.format(index)
        try:
            items.append(_json_item(obj, max_file_bytes))
        except ApiError as exc:
            if many:
                raise _prefixed(exc, field_prefix) from None
            raise
    return Parsed(items, many, mode)


def _item(new: NewAttachment, source: StagedSource | Base64Source | RejectedSource | None = None) -> IngestItem:
    """The job's item; with no bytes, the worker fetches ``url`` or, for a link type, stores it."""
    if source is None:
        return IngestItem(
            id=_new_uuid(), fields=new, source=LinkSource() if new.attachment_type in LINK_TYPES else UrlSource()
        )
    return IngestItem(id=_new_uuid(), fields=new, source=source)


def _new_uuid() -> uuid.UUID:
    return uuid.UUID(new_id())


def _json_item(obj: Any, max_file_bytes: int) -> IngestItem:
    new = parse_new_attachment(obj)
    data = obj.get("data")
    if data is None:
        return _item(new)
    parsed = encoding.parse_data(data)
    encoding.check_size(parsed.base64, max_file_bytes)
    if new.content_type is None and parsed.declared_type:
        new.content_type = parsed.declared_type[:100]
    return _item(new, Base64Source(data=parsed.base64))


async def _stage_large_base64(request: web.Request, upload_id: str, items: list[IngestItem]) -> None:
    for index, item in enumerate(items):
        source = item.source
        if isinstance(source, Base64Source) and source.data is not None and len(source.data) > INLINE_BASE64_CHARS:
            key = storage.staged_key(upload_id, index)
            await request.app[STORAGE].put_bytes(key, source.data.encode("ascii", "replace"))
            item.source = Base64Source(key=key)


async def _from_multipart(
    request: web.Request,
    upload_id: str,
    max_file_bytes: int,
    options: CreateOptions = NATIVE,
) -> Parsed:
    settings = request.app[SETTINGS]
    form = await read_form(
        request,
        request.app[STORAGE],
        upload_id,
        max_file_bytes=max_file_bytes,
        max_files=settings.max_files_per_request,
    )
    try:
        if options.check_form is not None:
            options.check_form(form)
        if options.form_fields is not None:
            form.fields = options.form_fields(dict(form.fields))
        return _multipart_payload(form)
    except BaseException:
        await request.app[STORAGE].delete_prefix(storage.staging_prefix(upload_id))
        raise


def is_raw_upload(request: web.Request) -> bool:
    """A body that is neither JSON nor multipart is the file itself (no Content-Type at all reads as
    application/octet-stream, as HTTP has it)."""
    return request.content_type != "application/json" and not request.content_type.startswith("multipart/")


def _raw_fields(request: web.Request) -> RawFields:
    """The create fields of a raw upload, from the query string, checked as a multipart form's are."""
    fields = coerce_form(dict(request.rel_url.query.items()))
    hint = None
    if disposition := request.headers.get("Content-Disposition"):
        hint = raw_disposition_filename(disposition)
    new = parse_new_attachment(fields, has_file=True, filename_hint=hint)
    if new.content_type is None and request.content_type != "application/octet-stream":
        new.content_type = request.content_type[:100]  # declared, as a data: URI's type is
    return new, hint


def _too_large(raw: RawFields, max_file_bytes: int) -> ApiError:
    new, hint = raw
    name = hint or new.filename or "the file"
    return ApiError(
        "size_exceeded", f"{name} is larger than the limit of {max_file_bytes} bytes", field="file", status=413
    )


async def _from_raw(request: web.Request, upload_id: str, max_file_bytes: int, raw: RawFields) -> Parsed:
    """``POST /v1/attachments?target_type=..&target_id=..`` with the file as the body (already admitted)."""
    new, hint = raw
    key = storage.staged_key(upload_id, 0)
    try:
        size = await request.app[STORAGE].write_stream(key, _body_chunks(request), limit=max_file_bytes)
    except BaseException as exc:  # nothing stays staged; over the limit (possible only when chunked): 413
        with contextlib.suppress(Exception):
            await request.app[STORAGE].delete_prefix(storage.staging_prefix(upload_id))
        if isinstance(exc, storage.SizeLimitExceeded):
            raise _too_large(raw, max_file_bytes) from None
        raise
    return Parsed([_item(new, StagedSource(key=key, filename=hint, size=size))])


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The body as the HTTP parser delivered it, chunk by chunk (no joining)."""
    content = request.content
    while True:
        chunk, end_of_http_chunk = await content.readchunk()
        if chunk:
            yield chunk
        elif not end_of_http_chunk:
            return


def _multipart_payload(form: Form) -> Parsed:
    raw = dict(form.fields)
    explicit_mode = raw.pop("mode", None)
    per_file: dict[int, dict[str, str]] = {}
    for key in list(raw):
        if m := _INDEXED.fullmatch(key):
            name = "name" if m.group(1).startswith("name") else "display_order"
            per_file.setdefault(int(m.group(2)), {})[name] = raw.pop(key)
    common = coerce_form(raw)
    if not form.files:
        new = parse_new_attachment(common)
        if common.get("data") is not None:
            raise bad_request("invalid_source", "send base64 data as JSON, or the bytes as a file part", "data")
        return Parsed([_item(new)])
    items = []
    for part in form.files:
        fields = {**common, **coerce_form(per_file.get(part.index, {}))}
        new = parse_new_attachment(fields, has_file=True, filename_hint=part.filename)
        source: StagedSource | RejectedSource
        if part.error is not None:
            source = RejectedSource(error=part.error.to_info())
        else:
            assert part.key is not None  # staged, since it was not refused
            source = StagedSource(key=part.key, filename=part.filename, size=part.size)
        items.append(_item(new, source))
    many = len(items) > 1 or explicit_mode is not None
    return Parsed(items, many, _mode(explicit_mode))


async def update(request: web.Request) -> web.Response:
    who = await principal(request, WRITE)
    attachment_id = _attachment_id(request)
    changes = parse_changes(await read_json(request, max_bytes=64 * 1024))
    return await _mutate(request, UpdateJob(**job_base(request, who), attachment_id=attachment_id, changes=changes))


async def cancel(request: web.Request) -> web.Response:
    who = await principal(request, WRITE)
    return await _mutate(request, CancelJob(**job_base(request, who), attachment_id=_attachment_id(request)))


def job_base(request: web.Request, who: Principal) -> dict[str, Any]:
    """What every job the caller asks for carries: a new job id, the account, the actor, the request's id."""
    return {"job_id": new_id(), "account_id": who.account_id, "actor": _actor(who), "request_id": request_id(request)}


async def _mutate(request: web.Request, job: Job) -> web.Response:
    return await writes.respond(request, await submit_mutation(request, job))


async def submit_mutation(request: web.Request, job: Job) -> str:
    """Queue a change, delete, link or session job; returns the id of the job whose outcome answers the
    request (an earlier one for a retry with the same Idempotency-Key)."""
    logs.bind(job_id=job.job_id)
    for _ in range(2):  # a second time only when the key's first job failed on our side
        earlier = await writes.claim_idempotency_key(request, job.account_id, job.job_id)
        if earlier is None:
            break
        if (replayed := await writes.replayed_job(request, job.account_id, earlier)) is not None:
            return replayed
    else:
        raise writes.key_in_use()  # two retries raced for a key whose first job failed
    await writes.submit(request, job)
    return job.job_id


def _target(request: web.Request) -> tuple[str, str]:
    """The target named in the path, held to the same rules as target_type and target_id in a body."""
    target = parse_parent({"type": request.match_info["type"], "id": request.match_info["target_id"]}, "target")
    assert target is not None  # both given
    return target


async def put_target(request: web.Request) -> web.Response:
    who = await principal(request, WRITE)
    target_type, target_id = _target(request)
    body = await read_json(request, max_bytes=16 * 1024)
    if not isinstance(body, dict) or set(body) - {"parent"}:
        raise bad_request("invalid_body", 'the body is {"parent": {"type": ..., "id": ...} or null}', "parent")
    parent = parse_parent(body.get("parent"))
    job = PutTargetJob(
        **job_base(request, who),
        target_type=target_type,
        target_id=target_id,
        parent=None if parent is None else TargetRef(*parent),
    )
    return await _mutate(request, job)


async def set_links(request: web.Request) -> web.Response:
    """EspoCRM's second step: the field's list of attachments becomes exactly these."""
    who = await principal(request, WRITE)
    target_type, target_id = _target(request)
    field = _text_field(request.match_info["field"])
    body = await read_json(request, max_bytes=64 * 1024)
    if isinstance(body, dict) and set(body) == {"ids"} and isinstance(body["ids"], list):
        ids = body["ids"]
    elif isinstance(body, dict) and set(body) == {"id"}:
        ids = [] if body["id"] is None else [body["id"]]  # a single-file field: the new file replaces the old
    else:
        raise bad_request("invalid_body", 'the body is {"ids": [...]} or, for a single-file field, {"id": ...}', "ids")
    if len(ids) > 500:
        raise bad_request("too_many", "at most 500 attachments per field", "ids")
    checked = [parse_attachment_ref(value, f"ids[{index}]") for index, value in enumerate(ids)]
    if None in checked:
        raise bad_request("invalid_value", "an attachment id cannot be null", f"ids[{checked.index(None)}]")
    job = SetLinksJob(
        **job_base(request, who),
        target_type=target_type,
        target_id=target_id,
        field=field,
        ids=list(dict.fromkeys(ref for ref in checked if ref is not None)),
    )
    return await _mutate(request, job)


def _text_field(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,99}", value):
        raise bad_request("invalid_value", "a field name is letters, digits and _", "field")
    return value


async def upload_status(request: web.Request) -> web.Response:
    who = await principal(request, READ)
    try:
        job_id = str(uuid.UUID(request.match_info["id"]))
    except ValueError:
        raise ApiError("not_found", "upload not found", status=404) from None
    return await writes.upload_status(request, who, job_id)


async def close_session(request: web.Request) -> web.Response:
    """Close an upload session: one event announces all its uploads."""
    who = await principal(request, WRITE)
    token = request.match_info["token"]
    if len(token) > 255:  # longer than any session_token an upload can carry
        raise ApiError("not_found", "session not found", status=404)
    return await _mutate(request, CloseSessionJob(**job_base(request, who), session_token=parse_session_token(token)))
