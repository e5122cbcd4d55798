"""The engines an app opens at start-up and closes at shutdown (aiohttp ``cleanup_ctx``)."""

from __future__ import annotations

import functools

import asyncpg
from aiohttp import web
from arq.connections import ArqRedis

from services.core import db, jobs
from services.core.budget import ByteBudget
from services.core.storage import Storage, open_storage
from services.web.http import SETTINGS, add_ready_check

REDIS = web.AppKey("redis", ArqRedis)
WAITER = web.AppKey("outcome_waiter", jobs.OutcomeWaiter)
POOL = web.AppKey("pool", asyncpg.Pool)
BUDGET = web.AppKey("byte_budget", ByteBudget)
STORAGE = web.AppKey("storage", Storage)


async def redis_ctx(app: web.Application):
    redis = await jobs.connect(app[SETTINGS].redis_url)
    waiter = jobs.OutcomeWaiter(redis)
    await waiter.start()
    app[REDIS], app[WAITER], app[BUDGET] = redis, waiter, ByteBudget(redis)
    add_ready_check(app, "redis", redis.ping)
    yield
    await waiter.stop()
    await redis.aclose()


async def pool_ctx(app: web.Application):
    # HTTP handlers run plain reads and change no session state: no reset round trip per request.
    pool = await db.create_pool(app[SETTINGS].database_url, min_size=2, max_size=20, reset_session=False)
    app[POOL] = pool

    add_ready_check(app, "postgres", functools.partial(db.ping, pool))
    yield
    await pool.close()


async def storage_ctx(app: web.Application):
    settings = app[SETTINGS]
    store = await open_storage(
        settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )
    app[STORAGE] = store
    add_ready_check(app, "storage", store.ping)
    yield
    await store.close()
