"""How every job runs: decode the contract, answer exactly once, retry or give up, never hang.

A job function here gets its typed job (``services.core.contract``) and returns a typed outcome. The
runner around it:

- decodes arq's argument; a job of another contract version, or one that breaks the contract, is
  answered ``failed`` with ``invalid_job`` (and never retried);
- answers a job that already has an outcome with that outcome (arq runs a job at least once);
- runs the job under its own deadline, shorter than arq's timeout by ``CLEANUP_S``, so a job that runs
  too long is cancelled while there is still time to clean up and answer (arq's own timeout would
  record it failed, retry nothing and tell no one);
- retries any error or timeout up to ``MAX_TRIES`` runs, then gives up: the job's ``give_up`` decides
  the outcome (ingest first looks for rows an earlier run committed);
- publishes the outcome, and only then lets the job drop what it no longer needs (``finish``: ingest's
  staged bytes), so nothing is deleted before the answer is durable.

A cancellation that is not the deadline (the worker stopping) propagates: arq runs the job again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from arq import Retry
from arq.constants import in_progress_key_prefix
from arq.worker import Function, func
from redis.exceptions import RedisError

from services.core import contract, jobs, logs
from services.core.contract import AnyOutcome, ErrorInfo, Failed, Job
from services.core.settings import Settings
from workers import metrics
from workers.context import WorkerContext

log = logging.getLogger("attachd.jobs")

MAX_TRIES = 3  # runs of one job before it is answered failed; arq may start one more (see arq_function)
# arq marks a running job "in progress" for this long, and the runner renews the mark while the job runs, so
# the job of a worker that died is taken up by another within this time (arq's own: the longest timeout).
IN_PROGRESS_S = 45
CLEANUP_S = 30  # what a job may take past its deadline to clean up and answer: arq's timeout is the sum
INTERNAL_ERROR = ErrorInfo(
    code="internal_error", status=500, message="this could not be done because of a fault on our side; try again"
)

J = TypeVar("J", bound=Job)


@dataclass(frozen=True)
class Attempt:
    number: int  # arq's job_try: 1 for the first run, more after a retry or a worker that died
    enqueued_at: datetime | None = None

    @property
    def is_retry(self) -> bool:
        return self.number > 1


Run = Callable[[WorkerContext, J, Attempt], Awaitable[AnyOutcome]]
GiveUp = Callable[[WorkerContext, J], Awaitable[AnyOutcome]]
Finish = Callable[[WorkerContext, J, float | None], Awaitable[None]]  # when the outcome was ready, if this run


async def internal_error(wctx: WorkerContext, job: Job) -> AnyOutcome:
    return Failed(error=INTERNAL_ERROR)


async def nothing_to_finish(wctx: WorkerContext, job: Job, answered_at: float | None) -> None:
    return None


@contextlib.asynccontextmanager
async def kept_in_progress(ctx: dict[str, Any]) -> AsyncIterator[None]:
    """Renew arq's in-progress mark of the running job (see IN_PROGRESS_S) until the block ends."""
    if "job_id" not in ctx:  # called directly, not by arq: nothing to renew
        yield
        return
    key = in_progress_key_prefix + ctx["job_id"]
    redis = ctx["redis"]

    async def renew() -> None:
        while True:
            await asyncio.sleep(IN_PROGRESS_S / 3)
            with contextlib.suppress(RedisError, OSError):  # Redis away: the job goes on; arq may run it again
                await redis.pexpire(key, IN_PROGRESS_S * 1000)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


CronJob = Callable[[dict[str, Any]], Awaitable[Any]]


def in_progress_renewed(cron_job: CronJob) -> CronJob:
    """A cron whose in-progress mark is renewed while it runs, as the jobs' is."""

    @functools.wraps(cron_job)
    async def run(ctx: dict[str, Any]) -> Any:
        async with kept_in_progress(ctx):
            return await cron_job(ctx)

    return run


def _attachment_of(job: Job) -> str | None:
    """The one attachment a job is about, if it is about one."""
    if isinstance(job, contract.IngestJob):
        return str(job.items[0].id) if len(job.items) == 1 else None
    attachment_id = getattr(job, "attachment_id", None)
    return None if attachment_id is None else str(attachment_id)


def retry_delay_s(attempt: int) -> int:
    """2, then 4 s: long enough to ride out a database restart."""
    return 2**attempt


@dataclass(frozen=True)
class JobSpec(Generic[J]):
    """One kind of job: its contract type, what it does, how long it may take, how it ends."""

    job_type: type[J]
    run: Run[J]
    deadline_s: Callable[[Settings], float]
    give_up: GiveUp[J] = internal_error
    finish: Finish[J] = nothing_to_finish

    @property
    def name(self) -> str:
        return contract.FUNCTIONS[self.job_type]

    def arq_function(self, settings: Settings) -> Function:
        # One run more than MAX_TRIES: a run killed with the worker still counts as a try, and the run
        # after it must still be allowed to answer.
        return func(self.entry, name=self.name, timeout=self.deadline_s(settings) + CLEANUP_S, max_tries=MAX_TRIES + 1)

    async def entry(self, ctx: dict[str, Any], payload: Any) -> dict[str, str]:
        """arq's job coroutine; returns the outcome's state (what arq keeps as the result)."""
        wctx: WorkerContext = ctx["attachd"]
        redis = ctx["redis"]
        name = self.name
        try:
            job = contract.decode_job(name, payload)
        except contract.UnknownJob as exc:
            job_id = payload.get("job_id") if isinstance(payload, dict) else None
            logs.bind(job_id=job_id if isinstance(job_id, str) else None)
            log.error("refused a %s job %s: %s", name, job_id, exc.message)
            metrics.job_outcome(name, "invalid")
            if isinstance(job_id, str):
                error = ErrorInfo(code="invalid_job", message=exc.message, field=exc.field, status=400)
                await jobs.publish_outcome(redis, job_id, Failed(error=error))
            return {"state": "failed"}
        assert isinstance(job, self.job_type)
        # Every line logged for this job, here or in the code it runs, carries its ids.
        logs.bind(
            request_id=job.request_id,
            account=job.account_id,
            job_id=job.job_id,
            attachment_id=_attachment_of(job),
        )
        if (done := await jobs.read_outcome(redis, job.job_id)) is not None:
            await self.finish(wctx, job, None)  # an earlier run answered and stopped before it could finish
            return {"state": done.state}
        attempt = Attempt(ctx.get("job_try", 1), ctx.get("enqueue_time"))
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.deadline_s(wctx.settings)), kept_in_progress(ctx):
                outcome = await self.run(wctx, job, attempt)
        except Exception as exc:  # TimeoutError included: the deadline cancelled the job
            what = "ran past its deadline" if isinstance(exc, TimeoutError) else "failed"
            if attempt.number < MAX_TRIES:
                log.warning("%s %s %s (run %d); retrying", name, job.job_id, what, attempt.number, exc_info=True)
                metrics.job_ran(name, time.perf_counter() - started)
                metrics.job_outcome(name, "retried")
                raise Retry(defer=retry_delay_s(attempt.number)) from None
            log.error("%s %s %s (run %d); giving up", name, job.job_id, what, attempt.number, exc_info=True)
            outcome = await self.give_up(wctx, job)
        answered_at = time.perf_counter()
        await jobs.publish_outcome(redis, job.job_id, outcome)
        result = metrics.result_of(outcome)
        metrics.job_ran(name, answered_at - started)
        metrics.job_outcome(name, result)
        log.info(
            "%s %s %s in %.0f ms (run %d)%s",
            name,
            job.job_id,
            result,
            (answered_at - started) * 1000,
            attempt.number,
            f": {outcome.error.code}" if isinstance(outcome, Failed) else "",
            extra={"function": name, "result": result, "duration_ms": round((answered_at - started) * 1000, 2)},
        )
        await self.finish(wctx, job, answered_at)
        return {"state": outcome.state}
