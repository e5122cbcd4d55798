"""A worker that stops starts nothing new, lets its jobs finish, and hands back what it cannot finish;
its temp directories do not outlive it."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid

import pytest
import redis.asyncio as aioredis
import uuid_utils

from services.core import jobs
from services.core.contract import Failed, IngestItem, IngestJob, NewAttachment, UrlSource
from services.core.errors import ApiError
from services.core.settings import load_settings
from tests.conftest import JWT_SECRET
from workers import context as worker_context
from workers.ingest import IngestRun
from workers.settings import create_worker, stop_worker


@pytest.fixture
async def settings(pg_url, redis_url, tmp_path):
    flush = aioredis.from_url(redis_url)
    await flush.flushdb()
    await flush.aclose()
    return load_settings(
        {},
        database_url=pg_url,
        redis_url=redis_url,
        storage_url=f"file://{tmp_path / 'files'}",
        jwt_secret=JWT_SECRET,
        tmp_dir=str(tmp_path / "tmp"),
        relay_interval_s=0,
    )


def job() -> IngestJob:
    job_id = str(uuid_utils.uuid7())
    new = NewAttachment(target_type="Task", target_id="1", url="https://example.invalid/x")
    return IngestJob(
        job_id=job_id, account_id="acct-life", items=[IngestItem(id=uuid.UUID(job_id), fields=new, source=UrlSource())]
    )


@pytest.fixture
def held(monkeypatch):
    """Ingest jobs that wait for ``release`` and then answer failed; ``started`` lists their ids."""
    started: list[str] = []
    release = asyncio.Event()

    async def run(self, attempt):
        started.append(self.job_id)
        await release.wait()
        return Failed(error=ApiError("held", "held by the test").to_info())

    monkeypatch.setattr(IngestRun, "run", run)
    return started, release


async def until(condition, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


async def test_a_stopping_worker_starts_nothing_from_the_batch_it_already_read(settings, held):
    started, release = held
    redis = await jobs.connect(settings.redis_url)
    worker = create_worker(settings, handle_signals=False, poll_delay=0.01, max_jobs=1)
    running = asyncio.create_task(worker.async_run())
    try:
        queued = [job() for _ in range(3)]
        for j in queued:
            await jobs.submit(redis, j)
        await until(lambda: len(started) == 1)
        await asyncio.sleep(0.2)  # the poll loop has read the other two and waits for a free slot
        stopping = asyncio.create_task(stop_worker(worker, grace_s=10))
        await asyncio.sleep(0.2)
        release.set()
        await stopping
        assert started == [queued[0].job_id]
        assert await jobs.read_outcome(redis, queued[0].job_id) is not None  # finished within the grace
        assert await redis.zscore(jobs.QUEUE, queued[0].job_id) is None  # done with
        for waiting in queued[1:]:  # the rest wait for another worker
            assert await redis.zscore(jobs.QUEUE, waiting.job_id) is not None
        assert not await redis.keys("arq:in-progress:*")
    finally:
        running.cancel()
        await redis.aclose()


async def test_a_job_past_the_grace_is_handed_back_and_runs_again(settings, held, monkeypatch):
    started, release = held
    redis = await jobs.connect(settings.redis_url)
    worker = create_worker(settings, handle_signals=False, poll_delay=0.01)
    running = asyncio.create_task(worker.async_run())
    try:
        stuck = job()
        await jobs.submit(redis, stuck)
        await until(lambda: len(started) == 1)
        await stop_worker(worker, grace_s=0.2)
        assert await jobs.read_outcome(redis, stuck.job_id) is None  # cancelled, not answered
        assert await redis.zscore(jobs.QUEUE, stuck.job_id) is not None  # handed back

        release.set()
        successor = create_worker(settings, handle_signals=False, poll_delay=0.01)
        again = asyncio.create_task(successor.async_run())
        await until(lambda: len(started) == 2)
        for _ in range(200):
            if (outcome := await jobs.read_outcome(redis, stuck.job_id)) is not None:
                break
            await asyncio.sleep(0.05)
        assert outcome is not None and outcome.error.code == "held"
        await stop_worker(successor, 5)
        again.cancel()
    finally:
        running.cancel()
        await redis.aclose()


def test_a_worker_removes_the_temp_dirs_of_workers_that_died(settings, tmp_path):
    base = tmp_path / "tmp"
    base.mkdir()
    dead = base / f"{worker_context.TMP_PREFIX}999999-abc"  # no such process
    dead.mkdir()
    (dead / "ingest-partial").write_bytes(b"x" * 10)
    alive = base / f"{worker_context.TMP_PREFIX}{os.getppid()}-def"  # a live process's: kept
    alive.mkdir()
    mine = worker_context.make_tmp_dir(settings)
    assert not dead.exists() and alive.exists()
    assert worker_context.make_tmp_dir(settings) != mine and os.path.isdir(mine)  # this process's stay


def test_a_worker_logs_no_line_for_each_cron_run_and_every_line_for_a_job(settings):
    """arq writes two lines per job; for the crons (close_idle runs every 10 s) they are noise: a cron logs
    what it did itself. A job's lines stay."""
    create_worker(settings, handle_signals=False)
    arq_log = logging.getLogger("arq.worker")

    def line(msg: str, *args: object) -> logging.LogRecord:
        return arq_log.makeRecord("arq.worker", logging.INFO, "worker.py", 1, msg, args, None)

    cron_run = "cron:close_idle:1764676815000:cron:close_idle"
    job_run = "01a236e1-aa00-7000-8000-000000000000:ingest"
    assert not arq_log.filter(line("%6.2fs → %s(%s)%s", 0.01, cron_run, "", ""))
    assert not arq_log.filter(line("%6.2fs ← %s ● %s", 0.02, cron_run, "{'state': 'complete'}"))
    assert arq_log.filter(line("%6.2fs → %s(%s)%s", 0.01, job_run, "{...}", ""))
    assert arq_log.filter(line("%6.2fs ← %s ● %s", 0.02, job_run, "{'state': 'complete'}"))
    assert arq_log.filter(line("Starting worker for %d functions: %s", 10, "ingest, cron:close_idle"))
