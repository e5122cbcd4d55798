"""What the worker counts and times, served on its /metrics.

Every job (``workers/runner.py``): ``attachd_jobs_total{function, result}`` with result ``committed``
(it did what was asked), ``refused`` (answered failed with a 4xx: the request was wrong), ``failed``
(answered failed with a 5xx: our fault, after its retries), ``retried`` (a run failed and another
follows) or ``invalid`` (it broke the contract); and ``attachd_job_seconds{function}``, each run's time.

The queue and the outbox, read on each scrape (:func:`refresh_queue`, :func:`refresh_outbox`):
``attachd_queue_depth`` (jobs due on ``attachd:queue``, running ones included),
``attachd_queue_oldest_age_seconds`` (how long the oldest due job has been due) and
``attachd_outbox_lag_seconds`` (age of the oldest event not yet relayed to ``attachd:events``).

URL fetches that fail: ``attachd_fetch_failures_total{reason}``, the reason being the error code.

Where an ingest job's time goes:

Stages, in the order an upload meets them (fetch to storage are per item, the rest per job):

- ``queue_wait``  from arq's enqueue time to the job starting (first tries only; a retry waits on purpose)
- ``fetch``       getting the bytes into a file the worker can read: a staged copy, base64 decode or URL
                  fetch (bytes staged on a local disk are read where they lie, so next to nothing)
- ``validate``    sniff, SHA-256 and size, the extension and content checks
- ``media_wait``  waiting for a thread of the media pool
- ``thumbnail``   libvips: measure and make both variants, on the media thread
- ``storage``     the original and the variants to their final keys
- ``commit``      the database transaction
- ``finish``      after the commit: staged bytes deleted, the outcome published
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import asyncpg
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis

from services.core.contract import FUNCTIONS, AnyOutcome, Failed

STAGES = ("queue_wait", "fetch", "validate", "media_wait", "thumbnail", "storage", "commit", "finish")

STAGE_SECONDS = Histogram(
    "attachd_ingest_stage_seconds",
    "Time ingest jobs spend in each stage",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
for _stage in STAGES:  # every stage shows, at 0, before its first job
    STAGE_SECONDS.labels(_stage)


def observe(stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage).observe(max(seconds, 0.0))


@contextmanager
def timed(stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        observe(stage, time.perf_counter() - started)


def observe_queue_wait(enqueue_time: datetime | None) -> None:
    if enqueue_time is not None:
        observe("queue_wait", time.time() - enqueue_time.timestamp())


RESULTS = ("committed", "refused", "failed", "retried", "invalid")
JOBS = Counter(
    "attachd_jobs",
    "Job runs by function and result: committed, refused (4xx), failed (5xx), retried, invalid",
    ["function", "result"],
)
JOB_SECONDS = Histogram(
    "attachd_job_seconds",
    "Time each job run takes, by function (retried runs included)",
    ["function"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
for _function in FUNCTIONS.values():  # every series shows, at 0, before its first job: rates need them
    JOB_SECONDS.labels(_function)
    for _result in RESULTS:
        JOBS.labels(_function, _result)


def result_of(outcome: AnyOutcome) -> str:
    """``committed``, ``refused`` (a 4xx failure) or ``failed`` (a 5xx one)."""
    if isinstance(outcome, Failed):
        return "refused" if outcome.error.status < 500 else "failed"
    return "committed"


def job_outcome(function: str, result: str) -> None:
    JOBS.labels(function, result).inc()


def job_ran(function: str, seconds: float) -> None:
    JOB_SECONDS.labels(function).observe(max(seconds, 0.0))


QUEUE_DEPTH = Gauge("attachd_queue_depth", "Jobs due on the queue (attachd:queue), running ones included")
QUEUE_OLDEST_AGE = Gauge(
    "attachd_queue_oldest_age_seconds", "How long the oldest job due on the queue has been due, in seconds"
)
OUTBOX_LAG = Gauge(
    "attachd_outbox_lag_seconds", "Age of the oldest event not yet relayed from the outbox to attachd:events"
)


async def refresh_queue(redis: Redis, queue: str) -> None:
    """The queue's gauges from its sorted set, scored by when each job is due (deferred retries: later)."""
    now_ms = time.time() * 1000
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcount(queue, "-inf", now_ms)
        pipe.zrange(queue, 0, 0, withscores=True)
        depth, oldest = await pipe.execute()
    QUEUE_DEPTH.set(depth)
    QUEUE_OLDEST_AGE.set(max((now_ms - oldest[0][1]) / 1000, 0.0) if oldest else 0.0)


async def refresh_outbox(pool: asyncpg.Pool) -> None:
    """The outbox's lag: 0 when every event has been relayed (a partial index makes this one index probe)."""
    async with pool.acquire() as conn:
        lag = await conn.fetchval(
            "SELECT EXTRACT(EPOCH FROM now() - created_at)::float8 FROM outbox "
            "WHERE published_at IS NULL ORDER BY seq LIMIT 1"
        )
    OUTBOX_LAG.set(max(lag or 0.0, 0.0))


FETCH_REASONS = ("fetch_failed", "fetch_timeout", "url_refused", "size_exceeded", "too_many_redirects", "invalid_url")
FETCH_FAILURES = Counter("attachd_fetch_failures", "URL fetches that failed, by reason (the error code)", ["reason"])
for _reason in FETCH_REASONS:
    FETCH_FAILURES.labels(_reason)


def fetch_failed(reason: str) -> None:
    FETCH_FAILURES.labels(reason).inc()
