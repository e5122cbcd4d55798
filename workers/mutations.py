"""Jobs that change committed attachments: update the changeable fields, soft delete."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from services.core import repository
from services.core.contract import (
    AnyOutcome,
    Canceled,
    CancelJob,
    Failed,
    Updated,
    UpdateJob,
    attachment_row,
)
from services.core.errors import ApiError, not_found
from services.core.validation import check_changes
from workers.context import WorkerContext
from workers.runner import Attempt, JobSpec

Change = Callable[[asyncpg.Connection, uuid.UUID], Awaitable[asyncpg.Record | None]]


async def _apply(wctx: WorkerContext, job: UpdateJob | CancelJob, change: Change) -> asyncpg.Record | None:
    """The row after the change; a re-run of a job whose change is committed finds it as it was left. The job
    names the attachment by id or integer id, within its account."""
    async with wctx.pool.acquire() as conn, conn.transaction():
        attachment_id = await repository.resolve_ref(conn, job.account_id, job.attachment_id)
        if attachment_id is None:
            return None
        row = await change(conn, attachment_id)
        if row is None and await repository.job_already_applied(conn, job.job_id, attachment_id):
            row = await repository.get_attachment(conn, job.account_id, attachment_id, include_canceled=True)
    return row


async def update_attachment(wctx: WorkerContext, job: UpdateJob, attempt: Attempt) -> AnyOutcome:
    try:
        changes = check_changes(job.changes)
    except ApiError as exc:
        return Failed(error=exc.to_info())

    async def change(conn: asyncpg.Connection, attachment_id: uuid.UUID) -> asyncpg.Record | None:
        return await repository.update_attachment(conn, job.account_id, attachment_id, changes, job.job_id)

    row = await _apply(wctx, job, change)
    return Failed(error=not_found().to_info()) if row is None else Updated(attachment=attachment_row(row))


async def cancel_attachment(wctx: WorkerContext, job: CancelJob, attempt: Attempt) -> AnyOutcome:
    async def change(conn: asyncpg.Connection, attachment_id: uuid.UUID) -> asyncpg.Record | None:
        return await repository.cancel_attachment(conn, job.account_id, attachment_id, job.job_id)

    row = await _apply(wctx, job, change)
    return Failed(error=not_found().to_info()) if row is None else Canceled(attachment=attachment_row(row))


UPDATE = JobSpec(UpdateJob, update_attachment, deadline_s=lambda s: 60)
CANCEL = JobSpec(CancelJob, cancel_attachment, deadline_s=lambda s: 60)
