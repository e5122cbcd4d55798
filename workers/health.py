"""Running a worker as its own process: the arq worker plus /healthz, /readyz and /metrics.

The engines (database pool, storage, temp dir) are opened once for the process. The arq worker on top of
them is started again whenever its poll loop dies (Redis went away): its running jobs are cancelled, and
arq runs them again, and a new worker connects with backoff; /readyz answers 503 meanwhile. SIGTERM
drains: no new jobs, running ones finish within ATTACHD_SHUTDOWN_GRACE_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from services.core import db, jobs
from services.core.settings import Settings
from services.core.startup import reach
from services.web.http import METRICS_REFRESH, add_ready_check, base_app
from services.web.server import app_runner
from workers import metrics
from workers.context import WorkerContext
from workers.settings import create_worker, stop_worker

log = logging.getLogger("attachd.worker")

RECONNECT_DELAYS_S = (0.5, 1, 2, 5, 10)


async def run_worker(settings: Settings, *, health_port: int) -> None:
    await reach("Postgres", settings.database_url, db.migrate(settings.database_url))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    context = await WorkerContext.open(settings)
    try:
        redis = await reach("Redis", settings.redis_url, jobs.connect(settings.redis_url))
    except BaseException:
        await context.close()
        raise
    await jobs.check_redis_persistence(redis)
    polling = asyncio.Event()

    async def worker_polls() -> None:
        if not polling.is_set():
            raise RuntimeError("the worker is reconnecting to Redis")
        await redis.ping()
        await jobs.check_redis_persistence(redis)

    app = base_app("worker", settings)
    add_ready_check(app, "redis", worker_polls)
    add_metrics_refresh(app, redis, context.pool)
    runner = app_runner(app, settings)  # the services' server: its Server header, request ids, access log
    await runner.setup()
    await web.TCPSite(runner, settings.host, health_port).start()
    try:
        await _supervise(settings, context, stop, polling)
    finally:
        await runner.cleanup()
        await redis.aclose()
        await context.close()


def add_metrics_refresh(app: web.Application, redis: Redis, pool: asyncpg.Pool) -> None:
    """The queue's and the outbox's gauges, read afresh on each scrape of ``app``'s /metrics."""

    async def queue() -> None:
        await metrics.refresh_queue(redis, jobs.QUEUE)

    async def outbox() -> None:
        await metrics.refresh_outbox(pool)

    app[METRICS_REFRESH].extend([queue, outbox])


async def _supervise(settings: Settings, context: WorkerContext, stop: asyncio.Event, polling: asyncio.Event) -> None:
    """Run arq workers on ``context`` until ``stop``; a worker whose poll loop died is replaced."""
    failures = 0
    loop = asyncio.get_running_loop()
    stopped = asyncio.create_task(stop.wait())
    while not stop.is_set():
        worker = create_worker(settings, handle_signals=False, context=context)
        worker_task = asyncio.create_task(worker.async_run())
        started = loop.time()
        polling.set()
        await asyncio.wait({worker_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        polling.clear()
        if stop.is_set():
            await stop_worker(worker, settings.shutdown_grace_s)
            break
        error = worker_task.exception() if not worker_task.cancelled() else None
        await stop_worker(worker, 0)
        if loop.time() - started > 60:
            failures = 0  # it ran well for a while: start the backoff over
        delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
        failures += 1
        log.warning("the worker lost Redis (%r); its jobs will run again; reconnecting in %s s", error, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    stopped.cancel()
