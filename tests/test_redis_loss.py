"""A Redis that lost its data loses no accepted upload and no event, and attachd says plainly when Redis
runs without the append-only file that would have kept them."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid

import msgspec
import redis.asyncio as aioredis
import uuid_utils
from prometheus_client import REGISTRY

from services.core import contract, jobs, storage
from tests.test_events import drain, published, stream
from tests.test_runner import sweep
from tests.test_uploads import multipart


async def forget_everything(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url)
    await redis.flushall()
    await redis.aclose()


async def test_status_urls_still_answer_after_redis_lost_its_data(make_service):
    async with make_service(staging_grace_s=0) as svc:
        one = await svc.upload_json(
            {"target_type": "Task", "target_id": "1", "filename": "a.txt", "data": base64.b64encode(b"a").decode()}
        )
        files = (("b.txt", b"b", "text/plain"), ("c.txt", b"c", "text/plain"))
        many = await svc.client.post(
            "/v1/attachments",
            headers=svc.auth(),
            data=multipart(*files, target_type="T", target_id="2"),
        )
        assert one.status == many.status == 201
        first, batch = await one.json(), await many.json()
        # The many-file upload's id is its status URL's; find it in its event.
        [batch_job] = {
            e["job_id"]
            for e in await svc.events()
            if str(e["attachment_id"]) in {a["id"] for a in batch["attachments"]}
        }

        # A job accepted (its manifest staged) whose queue entry Redis then lost.
        lost_id = str(uuid_utils.uuid7())
        item = contract.IngestItem(
            id=uuid.UUID(lost_id),
            fields=contract.NewAttachment(target_type="T", target_id="3", filename="lost.txt"),
            source=contract.Base64Source(data="bG9zdA=="),
        )
        job = contract.IngestJob(job_id=lost_id, account_id=svc.account, items=[item])
        await svc.storage.put_bytes(storage.manifest_key(lost_id), contract.encode({"function": "ingest", "job": job}))

        await forget_everything(svc.settings.redis_url)

        status = await (await svc.client.get(f"/v1/uploads/{first['id']}", headers=svc.auth())).json()
        assert status["status"] == "complete" and status["attachment"]["id"] == first["id"]
        status = await (await svc.client.get(f"/v1/uploads/{batch_job}", headers=svc.auth())).json()
        assert sorted(a["name"] for a in status["attachments"]) == ["b.txt", "c.txt"]
        status = await (await svc.client.get(f"/v1/uploads/{lost_id}", headers=svc.auth())).json()
        assert status["status"] == "queued"
        other = svc.auth(svc.other_account())
        for upload in (first["id"], batch_job, lost_id):  # another tenant learns nothing
            assert (await svc.client.get(f"/v1/uploads/{upload}", headers=other)).status == 404

        assert (await sweep(svc))["requeued"] == 1  # the manifest drives the lost job again
        done = await svc.finished_upload(f"/v1/uploads/{lost_id}", timeout=20)
        assert done["status"] == "complete" and done["attachment"]["name"] == "lost.txt"


async def test_events_the_stream_lost_are_relayed_again(service, redis_url):
    redis = aioredis.from_url(redis_url)
    try:
        await drain(service.pool, redis)
        for name in ("x.txt", "y.txt"):
            resp = await service.upload_json(
                {"target_type": "T", "target_id": "1", "filename": name, "data": base64.b64encode(b"1").decode()}
            )
            assert resp.status == 201
        before = await published(redis, service.account, 2)
        await redis.flushall()
        again = await published(redis, service.account, 2)  # the worker's relay refills the stream
        assert [e["seq"] for e in again] == [e["seq"] for e in before]
        assert [msgspec.json.decode(msgspec.json.encode(e), type=contract.AnyEvent).seq for e in again]
        await asyncio.sleep(0.5)
        assert len(await stream(redis, service.account)) == 2  # once, not on every relay run
    finally:
        await redis.aclose()


async def test_redis_without_aof_is_reported_in_the_log_and_a_metric(redis_url, caplog):
    redis = await jobs.connect(redis_url)
    try:
        assert await jobs.check_redis_persistence(redis) is True
        assert REGISTRY.get_sample_value("attachd_redis_aof") == 1
        await redis.config_set("appendonly", "no")
        with caplog.at_level(logging.WARNING, logger="attachd.jobs"):
            assert await jobs.check_redis_persistence(redis) is False
        assert REGISTRY.get_sample_value("attachd_redis_aof") == 0
        assert "appendonly no" in caplog.text
    finally:
        await redis.config_set("appendonly", "yes")
        await jobs.check_redis_persistence(redis)
        await redis.aclose()
