"""The staging sweeper: nothing accepted is lost, nothing unclaimed is kept.

The ingress answers 2xx only once the bytes and a manifest (the job's
payload) are staged and the job is in Redis. If Redis loses the job, the
sweeper finds the manifest after a grace period and enqueues it again (arq
refuses a duplicate id, so a job still queued is left alone). Staged bytes
with no manifest past the grace period belong to an upload that never
completed: they are deleted, and so are unfinished writes (``.part-`` files,
S3 multipart uploads) that a killed process left.

Resumable (tus) uploads still receiving bytes are left alone until they expire; then their bytes go and their
S3 multipart upload is aborted.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import msgspec

from services.core import contract, jobs, storage
from services.core.contract import ErrorInfo, Failed
from services.core.tus_uploads import Locked, TusUploads
from workers.context import WorkerContext

log = logging.getLogger("attachd.sweep")


async def sweep_staging(ctx: dict[str, Any]) -> dict[str, int]:
    wctx: WorkerContext = ctx["attachd"]
    redis = ctx["redis"]
    cutoff = time.time() - wctx.settings.staging_grace_s
    expired = await sweep_expired_tus(wctx, redis)
    # Read before the walk: an upload that finishes meanwhile has its manifest by the time the walk sees it.
    receiving = {upload.id: upload.write.key for upload in await TusUploads(redis).unfinished()}
    uploads: dict[str, list[storage.StoredObject]] = defaultdict(list)
    async for obj in wctx.storage.list("staging/"):
        parts = obj.key.split("/")
        if len(parts) >= 3:
            uploads[parts[1]].append(obj)

    requeued = deleted = 0
    # Writes a killed ingress or worker never finished; an upload made only of them is not listed above.
    partials = await wctx.storage.remove_partials("staging/", cutoff, keep=receiving.values())
    for upload_id, objects in uploads.items():
        if max(o.modified for o in objects) > cutoff or upload_id in receiving:
            continue
        prefix = storage.staging_prefix(upload_id)
        manifest = next((o for o in objects if o.key == storage.manifest_key(upload_id)), None)
        if manifest is None or await jobs.read_outcome(redis, upload_id) is not None:
            await wctx.storage.delete_prefix(prefix)
            deleted += 1
            continue
        manifest_body = msgspec.json.decode(await wctx.storage.get_bytes(manifest.key))
        try:
            job = contract.decode_job(manifest_body["function"], manifest_body["job"])
        except (contract.UnknownJob, KeyError, TypeError) as exc:
            log.error("staged upload %s has a manifest this worker cannot run: %s", upload_id, exc)
            error = ErrorInfo(code="invalid_job", message=f"the upload's job cannot be run: {exc}", status=400)
            await jobs.publish_outcome(redis, upload_id, Failed(error=error))
            await wctx.storage.delete_prefix(prefix)
            deleted += 1
            continue
        # With its owner key, as the ingress queued it, so its status URL answers.
        if await jobs.submit(redis, job):
            log.warning("re-enqueued staged upload %s", upload_id)
            requeued += 1
    if partials:
        log.info("removed %d unfinished staging writes", partials)
    return {"requeued": requeued, "deleted": deleted, "expired": expired}


async def sweep_expired_tus(wctx: WorkerContext, redis: Any) -> int:
    """Resumable uploads past their expiry, with no request writing them: their bytes deleted, their S3
    multipart upload aborted, their state gone (a HEAD is then a 404). How many."""
    uploads = TusUploads(redis)
    swept = 0
    for upload_id in await uploads.expired(time.time()):
        try:
            async with uploads.locked(upload_id):
                upload = await uploads.get(upload_id)
                if upload is not None and (upload.done or upload.expires > time.time()):
                    continue  # finished, or written to since it was listed
                if upload is not None:
                    await wctx.storage.abort(upload.write)
                await wctx.storage.delete_prefix(storage.staging_prefix(upload_id))
                await uploads.delete(upload_id)
                swept += 1
        except Locked:  # a request is writing it: not expired after all
            continue
    if swept:
        log.info("swept %d expired resumable uploads", swept)
    return swept


async def sweep_object_partials(ctx: dict[str, Any]) -> int:
    """Hourly: temp names of object writes a killed worker never finished (a walk of every object)."""
    wctx: WorkerContext = ctx["attachd"]
    removed = await wctx.storage.remove_partials("objects/", time.time() - wctx.settings.staging_grace_s)
    if removed:
        log.info("removed %d unfinished object writes", removed)
    return removed
