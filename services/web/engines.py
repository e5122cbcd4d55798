"""The engines an app opens at start-up and closes at shutdown (aiohttp ``cleanup_ctx``)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable

from aiohttp import web
from arq.connections import ArqRedis

from services.core import db, jobs
from services.core.budget import ByteBudget
from services.core.startup import reach
from services.core.storage import Storage, open_storage
from services.web.http import POOL, SETTINGS, add_ready_check

REDIS = web.AppKey("redis", ArqRedis)
WAITER = web.AppKey("outcome_waiter", jobs.OutcomeWaiter)
BUDGET = web.AppKey("byte_budget", ByteBudget)
STORAGE = web.AppKey("storage", Storage)
# The ingress's connections: enough for a key lookup per request in flight without queueing much (each
# holds its connection well under a millisecond), few enough for many replicas; idle ones close after 5 min.
LAZY_POOL_MAX = 8


async def redis_ctx(app: web.Application):
    url = app[SETTINGS].redis_url
    redis = await reach("Redis", url, jobs.connect(url))
    waiter = jobs.OutcomeWaiter(redis)
    await waiter.start()
    app[REDIS], app[WAITER], app[BUDGET] = redis, waiter, ByteBudget(redis)
    add_ready_check(app, "redis", redis.ping)
    await jobs.check_redis_persistence(redis)  # warns, and keeps the gauge current on every readiness probe
    add_ready_check(app, "redis_persistence", functools.partial(_never_unready, jobs.check_redis_persistence, redis))
    yield
    await waiter.stop()
    await redis.aclose()


async def _never_unready(check: Callable[[ArqRedis], Awaitable[object]], redis: ArqRedis) -> None:
    """A check that informs (logs, metrics) but does not take the service out of rotation."""
    with contextlib.suppress(Exception):
        await check(redis)


async def pool_ctx(app: web.Application):
    # HTTP handlers run plain reads and change no session state: no reset round trip per request.
    url = app[SETTINGS].database_url
    pool = await reach("Postgres", url, db.create_pool(url, min_size=2, max_size=20, reset_session=False))
    app[POOL] = pool

    add_ready_check(app, "postgres", functools.partial(db.ping, pool))
    yield
    await pool.close()


async def lazy_pool_ctx(app: web.Application):
    """A pool that connects on first use and is no readiness check: the ingress reads the database to check
    API keys (one short lookup per request) and to answer for uploads Redis has forgotten, and takes
    JWT-authenticated uploads while Postgres is away."""
    pool = await db.create_pool(app[SETTINGS].database_url, min_size=0, max_size=LAZY_POOL_MAX, reset_session=False)
    app[POOL] = pool
    yield
    await pool.close()


async def storage_ctx(app: web.Application):
    settings = app[SETTINGS]
    store = await reach(
        "storage",
        settings.storage_url,
        open_storage(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region),
    )
    app[STORAGE] = store
    add_ready_check(app, "storage", store.ping)
    yield
    await store.close()
