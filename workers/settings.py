"""arq worker settings: the job functions, the crons, and the engines they share."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from arq import cron
from arq.worker import Worker

from services.core import jobs
from services.core.settings import Settings
from workers import runner
from workers.context import WorkerContext
from workers.events import CLOSE_SESSION, close_idle, relay_forever
from workers.ingest import INGEST
from workers.mutations import CANCEL, UPDATE
from workers.sweep import sweep_staging
from workers.targets import PUT_TARGET, SET_LINKS, purge_unlinked


def worker_options(settings: Settings) -> dict[str, Any]:
    async def startup(ctx: dict[str, Any]) -> None:
        ctx["attachd"] = await WorkerContext.open(settings)
        if settings.relay_interval_s > 0:
            # A loop, not a cron: events reach the stream within relay_interval_s, not the next cron second.
            ctx["relay"] = asyncio.create_task(relay_forever(ctx["attachd"].pool, ctx["redis"], settings))

    async def shutdown(ctx: dict[str, Any]) -> None:
        if "relay" in ctx:
            ctx["relay"].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ctx["relay"]
        if "attachd" in ctx:
            await ctx["attachd"].close()

    return {
        "functions": [
            # The one way into the workers: every job decoded from the contract by workers/runner.py.
            spec.arq_function(settings)
            for spec in (INGEST, UPDATE, CANCEL, CLOSE_SESSION, PUT_TARGET, SET_LINKS)
        ],
        "cron_jobs": [
            cron(sweep_staging, second={0, 30}, run_at_startup=False, unique=True, timeout=300),
            cron(close_idle, second=set(range(5, 60, 10)), unique=True, timeout=120),
            cron(purge_unlinked, minute=set(range(0, 60, 5)), second=15, unique=True, timeout=300),
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


def create_worker(settings: Settings, *, handle_signals: bool = True, **overrides: Any) -> Worker:
    return Worker(**{**worker_options(settings), "handle_signals": handle_signals, **overrides})


async def stop_worker(worker: Worker, grace_s: float) -> None:
    """Pick no new jobs, let running ones finish (up to ``grace_s``), then close."""
    worker.allow_pick_jobs = False
    running = [t for t in worker.tasks.values() if not t.done()]
    if running:
        await asyncio.wait(running, timeout=grace_s)
    if worker.main_task is not None:
        worker.main_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker.main_task
    await worker.close()
