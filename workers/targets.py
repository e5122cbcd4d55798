"""Jobs on the target hierarchy: place a target, set a field's links; the purge of unclaimed uploads."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from services.core import jobs, repository
from services.core.errors import ApiError
from services.core.records import row_to_dict
from services.core.repository import targets
from services.core.validation import parse_parent
from workers.context import WorkerContext
from workers.outcomes import always_answers

log = logging.getLogger("attachd.targets")


async def _finish(ctx: dict[str, Any], job_id: str, outcome: dict[str, Any]) -> dict[str, Any]:
    await jobs.publish_outcome(ctx["redis"], job_id, outcome)
    return {"state": outcome["state"]}


@always_answers
async def put_target(ctx: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    wctx: WorkerContext = ctx["attachd"]
    account_id, target_type, target_id = job["account_id"], job["target_type"], job["target_id"]
    try:
        parent = parse_parent(job.get("parent"))
        async with wctx.pool.acquire() as conn, conn.transaction():
            await targets.lock_hierarchy(conn, account_id)
            chain, moved = await targets.place_target(conn, account_id, target_type, target_id, parent)
            if moved is not None:
                await repository.write_event(conn, account_id, "target.moved", None, job["job_id"], moved)
        outcome = {
            "state": "complete",
            "target": {
                "type": target_type,
                "id": target_id,
                "ancestors": chain,
                "parent": None if parent is None else {"type": parent[0], "id": parent[1]},
            },
        }
    except ApiError as exc:
        outcome = {"state": "failed", "error": exc.to_dict()}
    return await _finish(ctx, job["job_id"], outcome)


@always_answers
async def set_links(ctx: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    wctx: WorkerContext = ctx["attachd"]
    try:
        ids = [uuid.UUID(i) for i in job["ids"]]
        async with wctx.pool.acquire() as conn, conn.transaction():
            rows = await targets.set_links(
                conn, job["account_id"], job["target_type"], job["target_id"], job["field"], ids, job["job_id"]
            )
        outcome = {"state": "complete", "attachments": [row_to_dict(r) for r in rows], "many": True}
    except ApiError as exc:
        outcome = {"state": "failed", "error": exc.to_dict()}
    return await _finish(ctx, job["job_id"], outcome)


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
