"""The job contract: JSON jobs internal services can enqueue, idempotent re-runs, the sweeper."""

from __future__ import annotations

import base64
import os
import time

import orjson
import uuid_utils

from services.core import contract, jobs, storage
from workers.context import WorkerContext
from workers.ingest import ingest
from workers.sweep import sweep_staging


def ingest_job(svc, *, text: bytes = b"from a service") -> tuple[str, dict]:
    job_id = str(uuid_utils.uuid7())
    return job_id, {
        "v": 1,
        "job_id": job_id,
        "account_id": svc.account,
        "actor": {"type": "Application", "id": "billing"},
        "mode": "atomic",
        "items": [
            {
                "id": job_id,
                "fields": {"target_type": "Invoice", "target_id": "A-1", "filename": "note.txt"},
                "source": {"kind": "base64", "data": base64.b64encode(text).decode()},
            }
        ],
    }


def typed(payload: dict) -> contract.IngestJob:
    job = contract.decode_job("ingest", payload)
    assert isinstance(job, contract.IngestJob)
    return job


async def wait_outcome(svc, job_id: str) -> contract.AnyOutcome | None:
    redis = await jobs.connect(svc.settings.redis_url)
    try:
        waiter = jobs.OutcomeWaiter(redis)
        await waiter.start()
        outcome = await waiter.wait(job_id, 20)
        await waiter.stop()
        return outcome
    finally:
        await redis.aclose()


async def test_an_internal_service_can_enqueue_an_ingest_job_directly(service):
    job_id, payload = ingest_job(service)
    redis = await jobs.connect(service.settings.redis_url)
    raw = orjson.dumps({"t": 1, "f": "ingest", "a": [payload], "k": {}, "et": int(time.time() * 1000)})
    # What a non-Python service does: the arq wire format, JSON, by hand.
    await redis.psetex(f"arq:job:{job_id}", 60_000, raw)
    await redis.zadd(jobs.QUEUE, {job_id: int(time.time() * 1000)})
    await redis.aclose()
    outcome = await wait_outcome(service, job_id)
    assert outcome is not None and outcome.state == "complete", outcome
    [row] = await service.rows()
    assert row["created_by_type"] == "Application" and row["created_by_id"] == "billing"
    assert await service.storage.get_bytes(row["storage_key"]) == b"from a service"


async def test_a_job_run_twice_makes_one_row_and_one_event(service):
    job_id, payload = ingest_job(service)
    redis = await jobs.connect(service.settings.redis_url)
    ctx = {"redis": redis, "attachd": None, "job_try": 1}
    ctx["attachd"] = await WorkerContext.open(service.settings)
    try:
        first = await ingest(ctx, payload)
        # As if the worker died after committing but before its outcome reached Redis.
        await redis.delete(jobs.outcome_key(job_id))
        second = await ingest(ctx, payload)
        third = await ingest(ctx, payload)  # and once more, now that the outcome is there
    finally:
        await ctx["attachd"].close()
        await redis.aclose()
    assert first == second == third == {"state": "complete"}
    assert len(await service.rows()) == 1
    assert len(await service.events()) == 1


async def test_the_sweeper_re_enqueues_a_staged_upload_whose_job_was_lost(service):
    job_id, payload = ingest_job(service, text=b"survived a redis flush")
    manifest = {"function": "ingest", "job": payload}
    await service.storage.put_bytes(storage.manifest_key(job_id), orjson.dumps(manifest))
    if (path := service.storage.local_path(storage.manifest_key(job_id))) is not None:
        old = time.time() - 3600
        os.utime(path, (old, old))
    redis = await jobs.connect(service.settings.redis_url)
    wctx = await WorkerContext.open(service.settings)
    try:
        result = await sweep_staging({"redis": redis, "attachd": wctx})
    finally:
        await wctx.close()
        await redis.aclose()
    assert result == {"requeued": 1, "deleted": 0, "expired": 0}
    outcome = await wait_outcome(service, job_id)
    assert outcome is not None and outcome.state == "complete"
    [row] = await service.rows()
    assert await service.storage.get_bytes(row["storage_key"]) == b"survived a redis flush"
    assert [o.key async for o in service.storage.list("staging/")] == []


async def test_enqueue_writes_exactly_what_arqs_enqueue_job_writes(redis_url):
    """One script instead of arq's WATCH/EXISTS/MULTI, same keys, same bytes, same expiry and score."""
    queue = f"attachd:test-queue:{uuid_utils.uuid7()}"
    redis = await jobs.connect(redis_url)
    redis.default_queue_name = queue  # a queue no worker reads
    ours, theirs = str(uuid_utils.uuid7()), str(uuid_utils.uuid7())
    item = {"id": str(uuid_utils.uuid7()), "fields": {"target_type": "T", "target_id": "1"}, "source": {"kind": "url"}}
    payload = {"v": 1, "account_id": "a", "actor": {"type": "User", "id": "u"}, "items": [item]}
    job, their_job = typed({**payload, "job_id": ours}), typed({**payload, "job_id": theirs})
    try:
        assert await jobs.enqueue(redis, job, mark=(f"test:mark:{ours}", "a", 60))
        assert await redis.enqueue_job("ingest", their_job, _job_id=theirs)
        mine, arqs = [orjson.loads(await redis.get(f"arq:job:{i}")) for i in (ours, theirs)]
        assert abs(mine.pop("et") - arqs.pop("et")) < 5_000
        assert mine["a"][0].pop("job_id") == ours and arqs["a"][0].pop("job_id") == theirs
        expected = orjson.loads(contract.encode(job))
        del expected["job_id"]
        assert mine == arqs == {"t": None, "f": "ingest", "a": [expected], "k": {}}
        for job_id in (ours, theirs):
            assert 86_000_000 < await redis.pttl(f"arq:job:{job_id}") <= 86_400_000
            raw = orjson.loads(await redis.get(f"arq:job:{job_id}"))
            assert await redis.zscore(queue, job_id) == raw["et"]
        assert await redis.get(f"test:mark:{ours}") == b"a" and 0 < await redis.ttl(f"test:mark:{ours}") <= 60

        # uniqueness, as arq has it: refused while queued, and while the result is kept
        assert not await jobs.enqueue(redis, job)
        assert await redis.enqueue_job("ingest", job, _job_id=ours) is None
        await redis.delete(f"arq:job:{ours}")
        await redis.set(f"arq:result:{ours}", b"{}")
        assert not await jobs.enqueue(redis, job)
        assert await redis.zcard(queue) == 2
    finally:
        await redis.delete(queue, f"arq:job:{ours}", f"arq:job:{theirs}", f"arq:result:{ours}", f"test:mark:{ours}")
        await redis.aclose()


async def test_a_job_enqueued_by_the_script_is_run_by_the_arq_worker(service):
    job_id, payload = ingest_job(service, text=b"queued by one script")
    redis = await jobs.connect(service.settings.redis_url)
    try:
        assert await jobs.enqueue(redis, typed(payload))
        assert not await jobs.enqueue(redis, typed(payload))  # a duplicate id is refused
    finally:
        await redis.aclose()
    outcome = await wait_outcome(service, job_id)
    assert outcome is not None and outcome.state == "complete", outcome
    [row] = await service.rows()
    assert await service.storage.get_bytes(row["storage_key"]) == b"queued by one script"
    redis = await jobs.connect(service.settings.redis_url)
    try:  # done, its result kept: still refused, and nothing runs twice
        assert not await jobs.enqueue(redis, typed(payload))
    finally:
        await redis.aclose()
    assert len(await service.rows()) == 1
