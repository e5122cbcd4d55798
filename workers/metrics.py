"""Where an ingest job's time goes, served on the worker's /metrics.

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

from prometheus_client import Counter, Histogram

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


JOBS = Counter(
    "attachd_jobs", "Job runs by function and result: complete, failed, retried, invalid", ["function", "result"]
)


def job_outcome(function: str, result: str) -> None:
    JOBS.labels(function, result).inc()
