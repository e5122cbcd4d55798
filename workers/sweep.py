"""The staging sweeper: nothing accepted is lost, nothing unclaimed is kept.

The ingress answers 2xx only once the bytes and a manifest (the job's
payload) are staged and the job is in Redis. If Redis loses the job, the
sweeper finds the manifest after a grace period and enqueues it again (arq
refuses a duplicate id, so a job still queued is left alone). Staged bytes
with no manifest past the grace period belong to an upload that never
completed: they are deleted.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import orjson

from services.core import jobs, storage
from workers.context import WorkerContext

log = logging.getLogger("attachd.sweep")


async def sweep_staging(ctx: dict[str, Any]) -> dict[str, int]:
    wctx: WorkerContext = ctx["attachd"]
    redis = ctx["redis"]
    cutoff = time.time() - wctx.settings.staging_grace_s
    uploads: dict[str, list[storage.StoredObject]] = defaultdict(list)
    async for obj in wctx.storage.list("staging/"):
        parts = obj.key.split("/")
        if len(parts) >= 3:
            uploads[parts[1]].append(obj)

    requeued = deleted = 0
    for upload_id, objects in uploads.items():
        if max(o.modified for o in objects) > cutoff:
            continue
        prefix = storage.staging_prefix(upload_id)
        manifest = next((o for o in objects if o.key == storage.manifest_key(upload_id)), None)
        if manifest is None or await jobs.read_outcome(redis, upload_id) is not None:
            await wctx.storage.delete_prefix(prefix)
            deleted += 1
            continue
        payload = orjson.loads(await wctx.storage.get_bytes(manifest.key))
        if await jobs.enqueue(redis, payload["function"], upload_id, payload["job"]):
            log.warning("re-enqueued staged upload %s", upload_id)
            requeued += 1
    return {"requeued": requeued, "deleted": deleted}
