"""Submitting write jobs and answering with their outcome (sync by default, 202 on request)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
from aiohttp import web
from arq.jobs import Job, JobStatus

from services.core import jobs, records, signing, storage
from services.core.auth import Principal
from services.core.errors import ApiError, not_found
from services.web.engines import REDIS, STORAGE, WAITER
from services.web.http import SETTINGS, base_url, json_response

UPLOAD_TTL_S = 24 * 3600


def _owner_key(job_id: str) -> str:
    return f"attachd:upload:{job_id}"


def _idempotency_key(account_id: str, key: str) -> str:
    return f"attachd:idem:{account_id}:{hashlib.sha256(key.encode()).hexdigest()}"


def wants_async(request: web.Request) -> bool:
    prefer = request.headers.get("Prefer", "")
    return any(token.strip().lower() == "respond-async" for token in prefer.split(","))


def idempotency_claim(request: web.Request, who: Principal) -> tuple[str, int] | None:
    """The Redis key (and its TTL) that binds the request's Idempotency-Key to a job; None without the header."""
    key = request.headers.get("Idempotency-Key")
    if not key:
        return None
    if len(key) > 255:
        raise ApiError("invalid_header", "Idempotency-Key must be at most 255 characters", field="Idempotency-Key")
    return _idempotency_key(who.account_id, f"{request.method} {request.path} {key}"), UPLOAD_TTL_S


async def claim_idempotency_key(request: web.Request, who: Principal, job_id: str) -> str | None:
    """Bind the request's Idempotency-Key to ``job_id``; returns the earlier job's id on a retry."""
    claim = idempotency_claim(request, who)
    if claim is None:
        return None
    redis = request.app[REDIS]
    name, ttl = claim
    if await redis.set(name, job_id, nx=True, ex=ttl):
        return None
    earlier = await redis.get(name)
    return earlier.decode() if earlier else None


async def release_idempotency_key(request: web.Request, who: Principal) -> None:
    """A request refused before its job was queued must not pin its key to a job that never ran."""
    if claim := idempotency_claim(request, who):
        await request.app[REDIS].delete(claim[0])


async def submit(
    request: web.Request, who: Principal, function: str, job_id: str, payload: dict[str, Any], *, manifest: bool = False
) -> None:
    """Queue a job, and record which account owns it (for ``GET /v1/uploads/{id}``), in one round trip.

    With ``manifest`` the payload is staged first, so the sweeper can re-drive it.
    """
    body = {"account_id": who.account_id, "actor": {"type": who.actor_type, "id": who.actor_id}, **payload}
    if manifest:
        await request.app[STORAGE].put_bytes(
            storage.manifest_key(job_id), orjson.dumps({"function": function, "job": body})
        )
    await jobs.enqueue(
        request.app[REDIS], function, job_id, body, mark=(_owner_key(job_id), who.account_id, UPLOAD_TTL_S)
    )


def status_url(job_id: str) -> str:
    return f"/v1/uploads/{job_id}"


def _record(request: web.Request, row: dict[str, Any]) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    expires = signing.expiry(time.time(), settings.link_ttl_s)
    return records.to_api(row, base_url=base_url(request), secret=settings.link_secret, expires=expires)


def _public_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "status"} for e in errors]


async def respond(request: web.Request, job_id: str, *, kind: str, many: bool = False) -> web.Response:
    """Wait for the job (up to ATTACHD_SYNC_WAIT_S) and answer with its outcome, or 202 if it is not done."""
    if wants_async(request):
        return accepted(job_id, "queued")
    outcome = await request.app[WAITER].wait(job_id, request.app[SETTINGS].sync_wait_s)
    if outcome is None:
        return accepted(job_id, await job_state(request, job_id))
    return outcome_response(request, outcome, kind=kind, many=many)


def accepted(job_id: str, state: str) -> web.Response:
    return json_response(
        {"id": job_id, "status": state, "status_url": status_url(job_id)},
        status=202,
        headers={"Location": status_url(job_id)},
    )


def outcome_response(request: web.Request, outcome: dict[str, Any], *, kind: str, many: bool) -> web.Response:
    if outcome["state"] == "failed":
        error = ApiError.from_dict(outcome["error"])
        body = error.body()
        if outcome.get("errors"):
            body["errors"] = _public_errors(outcome["errors"])
        return json_response(body, status=error.status)
    if kind == "target":
        return json_response(outcome["target"])
    rows = outcome["attachments"]
    if kind == "session":
        return json_response({**outcome["session"], "attachments": [_record(request, r) for r in rows]})
    if kind == "links":
        return json_response({"attachments": [_record(request, r) for r in rows]})
    if kind == "cancel":
        return web.Response(status=204)
    if kind == "update":
        return json_response(_record(request, rows[0]))
    if many or outcome.get("many"):
        return json_response(
            {
                "attachments": [_record(request, r) for r in rows],
                "errors": _public_errors(outcome.get("errors", [])),
                "files_q": outcome.get("files_q"),
            },
            status=201,
        )
    return json_response(_record(request, rows[0]), status=201)


async def job_state(request: web.Request, job_id: str) -> str:
    status = await Job(job_id, request.app[REDIS], _queue_name=jobs.QUEUE).status()
    return "in_progress" if status == JobStatus.in_progress else "queued"


async def upload_status(request: web.Request, who: Principal, job_id: str) -> web.Response:
    redis = request.app[REDIS]
    owner = await redis.get(_owner_key(job_id))
    if owner is None or owner.decode() != who.account_id:
        raise not_found("upload")
    body: dict[str, Any] = {"id": job_id, "status_url": status_url(job_id)}
    outcome = await jobs.read_outcome(redis, job_id)
    if outcome is None:
        body["status"] = await job_state(request, job_id)
    elif outcome["state"] == "failed":
        body.update(status="failed", error=ApiError.from_dict(outcome["error"]).body()["error"])
        if outcome.get("errors"):
            body["errors"] = _public_errors(outcome["errors"])
    else:
        rendered = [_record(request, r) for r in outcome.get("attachments", [])]
        body.update(status="complete", attachments=rendered, errors=_public_errors(outcome.get("errors", [])))
        for extra in ("session", "target"):
            if extra in outcome:
                body[extra] = outcome[extra]
        if len(rendered) == 1:
            body["attachment"] = rendered[0]
        if "files_q" in outcome:
            body["files_q"] = outcome["files_q"]
    return json_response(body)
