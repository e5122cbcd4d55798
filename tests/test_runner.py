"""Every job answers: deadlines, retries and give-ups keep the status URL honest and the bytes where rows need
them; internal services enqueue through the same door as the ingress."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid

import pytest
import uuid_utils

from services.core import budget, contract, jobs, repository, storage
from services.core.contract import Actor, Base64Source, IngestItem, IngestJob, NewAttachment
from tests.conftest import Service, jpeg_bytes
from tests.test_uploads import multipart
from workers import runner
from workers.context import WorkerContext
from workers.ingest import IngestRun
from workers.sweep import sweep_staging

STUCK_S = 60  # far past the 1 s deadline these tests set


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(runner, "retry_delay_s", lambda attempt: 0)


async def upload_async(svc: Service, body: bytes = b"a text file\n", filename: str = "notes.txt") -> str:
    resp = await svc.client.post(
        "/v1/attachments",
        headers={**svc.auth(), "Prefer": "respond-async"},
        data=multipart((filename, body, "application/octet-stream"), target_type="Task", target_id="1"),
    )
    assert resp.status == 202, await resp.text()
    return (await resp.json())["status_url"]


async def sweep(svc: Service) -> dict[str, int]:
    redis = await jobs.connect(svc.settings.redis_url)
    wctx = await WorkerContext.open(svc.settings)
    try:
        return await sweep_staging({"redis": redis, "attachd": wctx})
    finally:
        await wctx.close()
        await redis.aclose()


async def test_a_job_stuck_before_its_commit_is_retried_then_answers_failed_and_leaves_no_bytes(
    make_service, monkeypatch
):
    runs = []
    store = IngestRun._store

    async def stored_then_stuck(self, *args):
        keys = await store(self, *args)  # the original is at its final key now
        runs.append(keys)
        await asyncio.sleep(STUCK_S)

    monkeypatch.setattr(IngestRun, "_store", stored_then_stuck)
    async with make_service(job_timeout_s=1, staging_grace_s=0) as svc:
        status = await svc.finished_upload(await upload_async(svc), timeout=30)
        assert status["status"] == "failed" and status["error"]["code"] == "internal_error", status
        assert len(runs) == runner.MAX_TRIES
        assert await svc.rows() == []
        assert await svc.settled_keys() == []  # neither the staged input nor the objects a run wrote
        assert await sweep(svc) == {"requeued": 0, "deleted": 0, "expired": 0}


async def test_a_commit_cut_by_the_deadline_rolls_back_and_the_retry_commits_once(make_service, monkeypatch):
    announce = repository.announce_created
    calls = []

    async def first_commit_stuck(conn, row, job_id):
        calls.append(job_id)
        if len(calls) == 1:
            await asyncio.sleep(STUCK_S)  # inside the transaction: the deadline cancels it
        await announce(conn, row, job_id)

    monkeypatch.setattr(repository, "announce_created", first_commit_stuck)
    async with make_service(job_timeout_s=1, staging_grace_s=0) as svc:
        body = b"committed on the second run\n"
        status = await svc.finished_upload(await upload_async(svc, body), timeout=30)
        assert status["status"] == "complete", status
        [row] = await svc.rows()
        assert await svc.storage.get_bytes(row["storage_key"]) == body
        assert len(await svc.events()) == 1 and len(calls) == 2
        assert [k for k in await svc.stored_keys() if k.startswith("staging/")] == []
        assert await sweep(svc) == {"requeued": 0, "deleted": 0, "expired": 0}


async def test_a_job_cut_after_its_commit_answers_complete_and_keeps_its_bytes(make_service, monkeypatch):
    commit = IngestRun.commit
    runs = []

    async def committed_then_stuck(self, prepared):
        rows = await commit(self, prepared)
        runs.append(len(rows))
        if len(runs) == 1:
            await asyncio.sleep(STUCK_S)  # committed, but the run dies before it answers
        return rows

    monkeypatch.setattr(IngestRun, "commit", committed_then_stuck)
    async with make_service(job_timeout_s=1, staging_grace_s=0) as svc:
        photo = jpeg_bytes(640, 480)
        status = await svc.finished_upload(await upload_async(svc, photo, "photo.jpg"), timeout=30)
        assert status["status"] == "complete", status
        assert runs == [1]  # the retry found the committed row instead of committing again
        [row] = await svc.rows()
        assert await svc.storage.get_bytes(row["storage_key"]) == photo
        for variant in row["variants"].values():
            assert await svc.storage.size(variant["key"]) == variant["size"]
        assert len(await svc.events()) == 1
        # The retry answered from the row it found: its staged input goes just after that answer.
        assert [k for k in await svc.settled_keys() if k.startswith("staging/")] == []


async def test_a_job_of_another_contract_version_answers_failed_at_once(service):
    job_id = str(uuid_utils.uuid7())
    payload = {"v": 2, "job_id": job_id, "account_id": service.account, "attachment_id": str(uuid.uuid4())}
    redis = await jobs.connect(service.settings.redis_url)
    try:
        await redis.set(jobs.owner_key(job_id), service.account, ex=600)
        await redis.enqueue_job("cancel_attachment", payload, _job_id=job_id)
    finally:
        await redis.aclose()
    status = await service.finished_upload(f"/v1/uploads/{job_id}", timeout=10)
    assert status["status"] == "failed"
    assert (status["error"]["code"], status["error"]["field"]) == ("invalid_job", "v")


def internal_job(svc: Service, data: bytes, **fields: object) -> IngestJob:
    job_id = str(uuid_utils.uuid7())
    new = NewAttachment(target_type="Invoice", target_id="A-1", **fields)  # type: ignore[arg-type]
    item = IngestItem(id=uuid.UUID(job_id), fields=new, source=Base64Source(data=base64.b64encode(data).decode()))
    return IngestJob(job_id=job_id, account_id=svc.account, actor=Actor(type="Application", id="billing"), items=[item])


async def test_an_internal_service_submits_an_ingest_job_that_commits_like_an_http_upload(service):
    photo = jpeg_bytes(1200, 800)
    job = internal_job(service, photo, filename="scan.jpg")
    redis = await jobs.connect(service.settings.redis_url)
    try:
        assert await jobs.submit_ingest(redis, service.storage, service.settings, job)
    finally:
        await redis.aclose()
    status = await service.finished_upload(f"/v1/uploads/{job.job_id}", timeout=20)
    assert status["status"] == "complete", status
    by_service = status["attachment"]

    resp = await service.client.post(
        "/v1/attachments",
        headers=service.auth(),
        data=multipart(("scan.jpg", photo, "image/jpeg"), target_type="Invoice", target_id="A-1"),
    )
    assert resp.status == 201, await resp.text()
    by_http = await resp.json()
    same = ("name", "filename", "content_type", "size", "sha256", "width", "height", "target_type", "target_id")
    assert {k: by_service[k] for k in same} == {k: by_http[k] for k in same}
    assert by_service["sha256"] == hashlib.sha256(photo).hexdigest()
    assert by_service["created_by"] == {"type": "Application", "id": "billing"}
    assert by_service["file"]["thumbnail"] and by_service["file"]["small"]
    rows = await service.rows()
    assert [r["id"] for r in rows] == [uuid.UUID(job.job_id), uuid.UUID(by_http["id"])]
    assert [e["event_type"] for e in await service.events()] == ["attachment.created"] * 2
    assert [k for k in await service.stored_keys() if k.startswith("staging/")] == []


async def test_an_internal_job_over_the_accounts_budget_is_refused_and_nothing_is_queued(make_service):
    async with make_service(byte_budget=100) as svc:
        job = internal_job(svc, b"x" * 1000, filename="big.txt")
        redis = await jobs.connect(svc.settings.redis_url)
        try:
            with pytest.raises(budget.NeverFits) as caught:
                await jobs.submit_ingest(redis, svc.storage, svc.settings, job)
            assert await redis.get(f"arq:job:{job.job_id}") is None
        finally:
            await redis.aclose()
        assert caught.value.status == 413
        assert await svc.storage.size(storage.manifest_key(job.job_id)) is None
        assert await svc.rows() == []


def test_one_retry_limit_for_every_job():
    from services.core.settings import load_settings
    from workers.settings import worker_options

    options = worker_options(load_settings({}, jwt_secret="x" * 32))
    assert options["max_tries"] == runner.MAX_TRIES + 1
    assert {f.max_tries for f in options["functions"]} == {runner.MAX_TRIES + 1}
    assert {f.name for f in options["functions"]} == set(contract.JOB_TYPES)
