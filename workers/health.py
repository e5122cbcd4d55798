"""Running a worker as its own process: the arq worker plus /healthz, /readyz and /metrics."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from services.core import db, jobs
from services.core.settings import Settings
from services.web.http import add_ready_check, base_app
from workers.settings import create_worker, stop_worker


async def run_worker(settings: Settings, *, health_port: int) -> None:
    await db.migrate(settings.database_url)
    worker = create_worker(settings, handle_signals=False)
    app = base_app("worker", settings)
    redis = await jobs.connect(settings.redis_url)
    add_ready_check(app, "redis", redis.ping)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, settings.host, health_port).start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker_task = asyncio.create_task(worker.async_run())
    stopper = asyncio.create_task(stop.wait())
    # A worker whose poll loop died (lost Redis for good) exits, and Kubernetes restarts it.
    await asyncio.wait({worker_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    await stop_worker(worker, settings.shutdown_grace_s)
    await runner.cleanup()
    await redis.aclose()
