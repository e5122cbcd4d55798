"""Jobs that change committed attachments: update the changeable fields, soft delete."""

from __future__ import annotations

import uuid
from typing import Any

from services.core import jobs, repository
from services.core.errors import ApiError, not_found
from services.core.records import row_to_dict
from services.core.validation import parse_changes
from workers.context import WorkerContext
from workers.outcomes import always_answers


async def _apply(ctx: dict[str, Any], job: dict[str, Any], change) -> dict[str, Any]:
    wctx: WorkerContext = ctx["attachd"]
    job_id, account_id = job["job_id"], job["account_id"]
    attachment_id = uuid.UUID(job["attachment_id"])
    try:
        async with wctx.pool.acquire() as conn, conn.transaction():
            row = await change(conn, account_id, attachment_id, job_id)
            if row is None and await repository.job_already_applied(conn, job_id, attachment_id):
                row = await repository.get_attachment(conn, account_id, attachment_id, include_canceled=True)
        outcome = (
            {"state": "failed", "error": not_found().to_dict()}
            if row is None
            else {"state": "complete", "attachments": [row_to_dict(row)]}
        )
    except ApiError as exc:
        outcome = {"state": "failed", "error": exc.to_dict()}
    await jobs.publish_outcome(ctx["redis"], job_id, outcome)
    return {"state": outcome["state"]}


@always_answers
async def update_attachment(ctx: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    async def change(conn, account_id, attachment_id, job_id):
        return await repository.update_attachment(
            conn, account_id, attachment_id, parse_changes(job["changes"]), job_id
        )

    return await _apply(ctx, job, change)


@always_answers
async def cancel_attachment(ctx: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    return await _apply(ctx, job, repository.cancel_attachment)
