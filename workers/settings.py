"""arq worker settings: the job functions, the crons, and the engines they share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

from arq import cron
from arq.cron import CronJob
from arq.typing import WorkerCoroutine
from arq.worker import Worker
from redis.exceptions import RedisError

from services.core import jobs
from services.core.settings import Settings
from workers import runner
from workers.context import WorkerContext
from workers.events import CLOSE_SESSION, close_idle, relay_forever
from workers.ingest import INGEST
from workers.mutations import CANCEL, UPDATE
from workers.sweep import sweep_object_partials, sweep_staging
from workers.targets import PUT_TARGET, SET_LINKS, purge_unlinked


def worker_options(settings: Settings, context: WorkerContext | None = None) -> dict[str, Any]:
    """arq's Worker arguments; ``context``: engines that outlive this Worker (a supervisor's), else its own."""

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["attachd"] = context or await WorkerContext.open(settings)
        if settings.relay_interval_s > 0:
            # A loop, not a cron: events reach the stream within relay_interval_s, not the next cron second.
            ctx["relay"] = asyncio.create_task(relay_forever(ctx["attachd"].pool, ctx["redis"], settings))

    async def shutdown(ctx: dict[str, Any]) -> None:
        if "relay" in ctx:
            ctx["relay"].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ctx["relay"]
        if "attachd" in ctx and context is None:
            await ctx["attachd"].close()

    def cron_job(job: runner.CronJob, *, timeout: int, **when: Any) -> CronJob:
        renewed = cast(WorkerCoroutine, runner.in_progress_renewed(job))
        return cron(renewed, unique=True, timeout=timeout, **when)

    return {
        "functions": [
            # The one way into the workers: every job decoded from the contract by workers/runner.py.
            spec.arq_function(settings)
            for spec in (INGEST, UPDATE, CANCEL, CLOSE_SESSION, PUT_TARGET, SET_LINKS)
        ],
        "cron_jobs": [
            cron_job(sweep_staging, second={0, 30}, run_at_startup=False, timeout=300),
            cron_job(close_idle, second=set(range(5, 60, 10)), timeout=120),
            cron_job(purge_unlinked, minute=set(range(0, 60, 5)), second=15, timeout=300),
            cron_job(sweep_object_partials, minute=7, second=45, timeout=600),
        ],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": jobs.redis_settings(settings.redis_url),
        "queue_name": jobs.QUEUE,
        "job_serializer": jobs.serialize,
        "job_deserializer": jobs.deserialize,
        "max_jobs": settings.worker_concurrency,
        "job_timeout": settings.job_timeout_s + runner.CLEANUP_S,
        "keep_result": 3600,
        "max_tries": runner.MAX_TRIES + 1,
        "poll_delay": 0.05,
        "job_completion_wait": settings.shutdown_grace_s,
    }


def not_a_cron_run(record: logging.LogRecord) -> bool:
    """False for arq's lines about a cron's run (two every 10 s, for close_idle); the crons log what they did."""
    args = record.args
    return not (isinstance(args, tuple) and len(args) > 1 and str(args[1]).startswith("cron:"))


def create_worker(
    settings: Settings, *, handle_signals: bool = True, context: WorkerContext | None = None, **overrides: Any
) -> Worker:
    logging.getLogger("arq.worker").addFilter(not_a_cron_run)
    worker = Worker(**{**worker_options(settings, context), "handle_signals": handle_signals, **overrides})
    # arq marks a job in progress for its longest timeout; the runner renews a shorter mark instead, so the
    # job of a worker that died runs again within IN_PROGRESS_S (not after five minutes).
    worker.in_progress_timeout_s = runner.IN_PROGRESS_S
    return worker


async def stop_worker(worker: Worker, grace_s: float) -> None:
    """Start no new job, let the running ones finish (up to ``grace_s``), then close; a job still running
    is cancelled, and arq runs it again on another worker."""
    worker.allow_pick_jobs = False
    if worker.main_task is not None:
        # The poll loop goes first: it would otherwise go on starting jobs from a batch it already read.
        worker.main_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker.main_task
    running = [t for t in worker.tasks.values() if not t.done()]
    if running:
        await asyncio.wait(running, timeout=grace_s)
    # Past the grace, cancel the jobs themselves, not arq's tasks around them: arq then hands each back to
    # the queue, and its bookkeeping of a job that did finish is not cut short.
    for task in worker.job_tasks.values():
        task.cancel()
    if running := [t for t in worker.tasks.values() if not t.done()]:
        await asyncio.wait(running, timeout=5)
    try:
        await worker.close()
    except (RedisError, OSError):  # Redis is gone: close without it
        if worker.on_shutdown is not None:
            await worker.on_shutdown(worker.ctx)
        with contextlib.suppress(RedisError, OSError):
            await worker.pool.close(close_connection_pool=True)
