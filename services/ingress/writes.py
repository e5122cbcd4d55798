"""Submitting write jobs and answering with their outcome (sync by default, 202 on request)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiohttp import web
from arq.jobs import Job as ArqJob
from arq.jobs import JobStatus

from services.core import jobs, records, repository, signing, storage
from services.core.auth import Principal
from services.core.contract import (
    AnyOutcome,
    AttachmentRow,
    Canceled,
    Failed,
    Ingested,
    ItemError,
    Job,
    LinksSet,
    SessionClosed,
    TargetPlaced,
    Updated,
    attachment_row,
)
from services.core.errors import ApiError, not_found
from services.web.engines import POOL, REDIS, STORAGE, WAITER
from services.web.http import SETTINGS, base_url, json_response


def _idempotency_key(account_id: str, key: str) -> str:
    return f"attachd:idem:{account_id}:{hashlib.sha256(key.encode()).hexdigest()}"


def wants_async(request: web.Request) -> bool:
    prefer = request.headers.get("Prefer", "")
    return any(token.strip().lower() == "respond-async" for token in prefer.split(","))


# An Idempotency-Key says "pending:<job id>" while its request is being received (kept alive by it, so a
# request that dies frees its key within PENDING_TTL_S) and names the job once the job is queued (jobs.submit).
PENDING = "pending:"
PENDING_TTL_S = 15

_DELETE_IF = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def idempotency_claim(request: web.Request, account_id: str) -> tuple[str, int] | None:
    """The Redis key of the request's Idempotency-Key and how long a pending claim lives; None without one."""
    key = request.headers.get("Idempotency-Key")
    if not key:
        return None
    if len(key) > 255:
        raise ApiError("invalid_header", "Idempotency-Key must be at most 255 characters", field="Idempotency-Key")
    return _idempotency_key(account_id, f"{request.method} {request.path} {key}"), PENDING_TTL_S


async def claim_idempotency_key(request: web.Request, account_id: str, job_id: str) -> str | None:
    """Claim the request's Idempotency-Key for ``job_id``; returns what holds it already, if anything."""
    claim = idempotency_claim(request, account_id)
    if claim is None:
        return None
    redis = request.app[REDIS]
    name, ttl = claim
    if await redis.set(name, PENDING + job_id, nx=True, ex=ttl):
        return None
    earlier = await redis.get(name)
    return earlier.decode() if earlier else None


async def _delete_if(request: web.Request, key: str, value: str) -> None:
    await request.app[REDIS].eval(_DELETE_IF, 1, key, value)  # type: ignore[misc]  # redis-py's stubs


async def release_idempotency_key(request: web.Request, who: Principal, job_id: str) -> None:
    """A request refused before its job was queued must not pin its key to a job that never ran."""
    if claim := idempotency_claim(request, who.account_id):
        await _delete_if(request, claim[0], PENDING + job_id)


@contextlib.asynccontextmanager
async def claim_kept_alive(request: web.Request, account_id: str) -> AsyncIterator[None]:
    """While a request's body arrives, its pending claim does not expire (and expires soon after a crash)."""
    claim = idempotency_claim(request, account_id)
    if claim is None:
        yield
        return
    name, ttl = claim

    async def refresh() -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            await request.app[REDIS].expire(name, ttl)

    task = asyncio.create_task(refresh())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def key_in_use() -> ApiError:
    return ApiError(
        "idempotency_key_in_use",
        "a request with this Idempotency-Key is still being received; retry once it has been answered",
        field="Idempotency-Key",
        status=409,
        headers={"Retry-After": str(PENDING_TTL_S)},
    )


async def replayed_job(request: web.Request, account_id: str, earlier: str) -> str | None:
    """The job whose outcome answers a retry whose Idempotency-Key is taken: the first request's; 409 while
    the first request is still arriving; None when the first job failed on our side, so the retry is free
    to run again (the key is released)."""
    if earlier.startswith(PENDING):
        raise key_in_use()
    outcome = await jobs.read_outcome(request.app[REDIS], earlier)
    if isinstance(outcome, Failed) and outcome.error.status >= 500:
        claim = idempotency_claim(request, account_id)
        assert claim is not None  # a replay has a key
        await _delete_if(request, claim[0], earlier)
        return None
    return earlier


async def submit(request: web.Request, job: Job, *, manifest: bool = False) -> None:
    """Queue the job with its owner key (and bind the request's Idempotency-Key to it); with ``manifest`` the
    job is staged first, so the sweeper can re-drive it."""
    claim = idempotency_claim(request, job.account_id)
    await jobs.submit(
        request.app[REDIS],
        job,
        store=request.app[STORAGE] if manifest else None,
        idempotency_key=None if claim is None else claim[0],
    )


def status_url(job_id: str) -> str:
    return f"/v1/uploads/{job_id}"


def record(request: web.Request, row: AttachmentRow) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    expires = signing.expiry(time.time(), settings.link_ttl_s)
    return records.to_api(
        msgspec.structs.asdict(row), base_url=base_url(request), secret=settings.link_secret, expires=expires
    )


def records_of(request: web.Request, rows: list[AttachmentRow]) -> list[dict[str, Any]]:
    """The API records of an outcome's rows, with their signed links."""
    return [record(request, r) for r in rows]


def public_errors(errors: list[ItemError]) -> list[dict[str, Any]]:
    """Item errors as the API shows them: without the HTTP status."""
    return [{"index": e.index, "filename": e.filename, **ApiError.from_info(e).body()["error"]} for e in errors]


async def respond(request: web.Request, job_id: str) -> web.Response:
    """Wait for the job (up to ATTACHD_SYNC_WAIT_S) and answer with its outcome, or 202 if it is not done."""
    if wants_async(request):
        return accepted(job_id, "queued")
    outcome = await outcome_of(request, job_id)
    if outcome is None:
        return accepted(job_id, await job_state(request, job_id))
    return outcome_response(request, outcome)


async def outcome_of(request: web.Request, job_id: str, wait_s: float | None = None) -> AnyOutcome | None:
    """The job's outcome, waiting up to ``wait_s`` (ATTACHD_SYNC_WAIT_S by default); None if not done by then."""
    wait = request.app[SETTINGS].sync_wait_s if wait_s is None else wait_s
    return await request.app[WAITER].wait(job_id, wait)


def accepted(job_id: str, state: str) -> web.Response:
    return json_response(
        {"id": job_id, "status": state, "status_url": status_url(job_id)},
        status=202,
        headers={"Location": status_url(job_id)},
    )


def outcome_response(request: web.Request, outcome: AnyOutcome) -> web.Response:
    """The HTTP answer to a finished write, by the kind of its outcome."""
    match outcome:
        case Failed(error=info, errors=errors):
            error = ApiError.from_info(info)
            body = error.body()
            if errors:
                body["errors"] = public_errors(errors)
            return json_response(body, status=error.status)
        case Ingested(attachments=rows, many=True, errors=errors, files_q=files_q):
            body = {"attachments": records_of(request, rows), "errors": public_errors(errors), "files_q": files_q}
            return json_response(body, status=201)
        case Ingested(attachments=rows):
            return json_response(record(request, rows[0]), status=201)
        case Updated(attachment=row):
            return json_response(record(request, row))
        case Canceled():
            return web.Response(status=204)
        case SessionClosed(session=session, attachments=rows):
            return json_response({**msgspec.to_builtins(session), "attachments": records_of(request, rows)})
        case TargetPlaced(target=target):
            return json_response(msgspec.to_builtins(target))
        case LinksSet(attachments=rows):
            return json_response({"attachments": records_of(request, rows)})
    raise TypeError(f"no response for {type(outcome).__name__}")


async def job_state(request: web.Request, job_id: str) -> str:
    status = await ArqJob(job_id, request.app[REDIS], _queue_name=jobs.QUEUE).status()
    return "in_progress" if status == JobStatus.in_progress else "queued"


async def upload_status(request: web.Request, who: Principal, job_id: str) -> web.Response:
    redis = request.app[REDIS]
    owner = await redis.get(jobs.owner_key(job_id))
    if owner is None:
        return await _status_without_redis(request, who, job_id)
    if owner.decode() != who.account_id:
        raise not_found("upload")
    body: dict[str, Any] = {"id": job_id, "status_url": status_url(job_id)}
    outcome = await jobs.read_outcome(redis, job_id)
    match outcome:
        case None:
            body["status"] = await job_state(request, job_id)
        case Failed(error=info, errors=errors):
            body.update(status="failed", error=ApiError.from_info(info).body()["error"])
            if errors:
                body["errors"] = public_errors(errors)
        case _:
            body["status"] = "complete"
            body.update(_status_details(request, outcome))
    return json_response(body)


async def _status_without_redis(request: web.Request, who: Principal, job_id: str) -> web.Response:
    """An upload Redis no longer knows (its keys expired, or Redis lost its data) is answered from what
    is durable: the rows it committed, else its staged manifest (the sweeper will queue it again)."""
    body: dict[str, Any] = {"id": job_id, "status_url": status_url(job_id)}
    async with request.app[POOL].acquire() as conn:
        rows = await repository.attachments_of_upload(conn, who.account_id, uuid.UUID(job_id))
    if rows:
        rendered = records_of(request, [attachment_row(r) for r in rows])
        body.update(status="complete", attachments=rendered, errors=[])
        if len(rendered) == 1:
            body["attachment"] = rendered[0]
        return json_response(body)
    store, key = request.app[STORAGE], storage.manifest_key(job_id)
    if await store.size(key) is None:
        raise not_found("upload")
    try:
        manifest = msgspec.json.decode(await store.get_bytes(key))
    except (FileNotFoundError, msgspec.DecodeError):  # swept or replaced meanwhile
        raise not_found("upload") from None
    if not isinstance(manifest, dict) or manifest.get("job", {}).get("account_id") != who.account_id:
        raise not_found("upload")
    body["status"] = "queued"
    return json_response(body)


def _status_details(request: web.Request, outcome: AnyOutcome) -> dict[str, Any]:
    """What a finished write's status shows: its attachments, and what else its kind answers with."""
    details: dict[str, Any] = {"attachments": [], "errors": []}
    match outcome:
        case Ingested(attachments=rows, errors=errors, many=many, files_q=files_q):
            details.update(attachments=records_of(request, rows), errors=public_errors(errors))
            if many:
                details["files_q"] = files_q
        case Updated(attachment=row) | Canceled(attachment=row):
            details["attachments"] = [record(request, row)]
        case SessionClosed(session=session, attachments=rows):
            details.update(attachments=records_of(request, rows), session=msgspec.to_builtins(session))
        case TargetPlaced(target=target):
            details["target"] = msgspec.to_builtins(target)
        case LinksSet(attachments=rows):
            details["attachments"] = records_of(request, rows)
    if len(details["attachments"]) == 1:
        details["attachment"] = details["attachments"][0]
    return details
