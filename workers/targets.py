"""Jobs on the target hierarchy: place a target, set a field's links; the purge of unclaimed uploads."""

from __future__ import annotations

import logging
from typing import Any

from services.core import repository
from services.core.contract import (
    AnyOutcome,
    Failed,
    LinksSet,
    PlacedTarget,
    PutTargetJob,
    SetLinksJob,
    TargetPlaced,
    attachment_row,
)
from services.core.errors import ApiError
from services.core.repository import targets
from workers.context import WorkerContext
from workers.runner import Attempt, JobSpec

log = logging.getLogger("attachd.targets")


async def put_target(wctx: WorkerContext, job: PutTargetJob, attempt: Attempt) -> AnyOutcome:
    parent = None if job.parent is None else (job.parent.type, job.parent.id)
    try:
        async with wctx.pool.acquire() as conn, conn.transaction():
            await targets.lock_hierarchy(conn, job.account_id)
            chain, moved = await targets.place_target(conn, job.account_id, job.target_type, job.target_id, parent)
            if moved is not None:
                await repository.write_event(conn, job.account_id, "target.moved", None, job.job_id, moved)
    except ApiError as exc:
        return Failed(error=exc.to_info())
    return TargetPlaced(target=PlacedTarget(type=job.target_type, id=job.target_id, ancestors=chain, parent=job.parent))


async def set_links(wctx: WorkerContext, job: SetLinksJob, attempt: Attempt) -> AnyOutcome:
    try:
        async with wctx.pool.acquire() as conn, conn.transaction():
            rows = await targets.set_links(
                conn, job.account_id, job.target_type, job.target_id, job.field, job.ids, job.job_id
            )
    except ApiError as exc:
        return Failed(error=exc.to_info())
    return LinksSet(attachments=[attachment_row(r) for r in rows])


async def purge_unlinked(ctx: dict[str, Any]) -> int:
    """Uploads never linked within ATTACHD_UNLINKED_TTL_S go, bytes first, then their rows."""
    wctx: WorkerContext = ctx["attachd"]
    async with wctx.pool.acquire() as conn:
        rows = await repository.unlinked_uploads(conn, wctx.settings.unlinked_ttl_s)
    for row in rows:
        keys = [row["storage_key"]] if row["storage_key"] else []
        keys += [v["key"] for v in (row["variants"] or {}).values()]
        await wctx.storage.delete(*keys)
        async with wctx.pool.acquire() as conn, conn.transaction():
            await repository.delete_unlinked(conn, row["account_id"], row["id"])
    if rows:
        log.info("purged %d unlinked uploads", len(rows))
    return len(rows)


PUT_TARGET = JobSpec(PutTargetJob, put_target, deadline_s=lambda s: 300)
SET_LINKS = JobSpec(SetLinksJob, set_links, deadline_s=lambda s: 60)
