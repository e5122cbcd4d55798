"""An Idempotency-Key tells the truth: it names a job only once the job is queued, a request that died
leaves it free, and a job that failed on our side does not pin it."""

from __future__ import annotations

import asyncio
import base64
import time

import uuid_utils
from redis.exceptions import ConnectionError as RedisConnectionError

from services.core import jobs
from services.core.contract import ErrorInfo, Failed
from services.ingress import writes
from tests.conftest import Service


def body(text: bytes) -> dict[str, str]:
    return {"target_type": "Task", "target_id": "1", "filename": "k.txt", "data": base64.b64encode(text).decode()}


def key_name(svc: Service, key: str) -> str:
    return writes._idempotency_key(svc.account, f"POST /v1/attachments {key}")


async def test_a_key_whose_request_died_mid_stream_is_free_once_its_claim_lapses(service):
    redis = await jobs.connect(service.settings.redis_url)
    try:  # what an ingress killed while receiving the first request leaves behind
        lapses = time.monotonic() + 3  # time for the first request to find it held, on a busy machine
        await redis.set(key_name(service, "k-dead"), f"{writes.PENDING}{uuid_utils.uuid7()}", ex=3)
        early = await service.upload_json(body(b"retry's bytes"), headers={"Idempotency-Key": "k-dead"})
        assert early.status == 409, await early.text()
        error = (await early.json())["error"]
        assert (error["code"], error["field"]) == ("idempotency_key_in_use", "Idempotency-Key")
        assert early.headers["Retry-After"] == str(writes.PENDING_TTL_S)
        await asyncio.sleep(lapses + 0.2 - time.monotonic())
        retry = await service.upload_json(body(b"retry's bytes"), headers={"Idempotency-Key": "k-dead"})
        assert retry.status == 201, await retry.text()
        [row] = await service.rows()
        assert await service.storage.get_bytes(row["storage_key"]) == b"retry's bytes"
        assert await redis.get(key_name(service, "k-dead")) == str(row["id"]).encode()  # bound to the job
    finally:
        await redis.aclose()


async def test_a_request_still_arriving_holds_its_key_and_a_retry_hears_so(make_service):
    async with make_service(byte_budget=0) as svc:  # no budget: a chunked body needs no Content-Length
        await still_arriving(svc)


async def still_arriving(service: Service) -> None:
    gate = asyncio.Event()

    async def slow_body():
        yield b"--b\r\nContent-Disposition: form-data; name=target_type\r\n\r\nTask\r\n"
        yield b"--b\r\nContent-Disposition: form-data; name=target_id\r\n\r\n1\r\n"
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.txt"\r\n\r\nslow'
        await gate.wait()
        yield b" bytes\r\n--b--\r\n"

    headers = {**service.auth(), "Idempotency-Key": "k-slow", "Content-Type": "multipart/form-data; boundary=b"}
    first = asyncio.create_task(service.client.post("/v1/attachments", data=slow_body(), headers=headers))
    await asyncio.sleep(writes.PENDING_TTL_S / 3 + 1)  # past one refresh of the claim
    retry = await service.upload_json(body(b"other"), headers={"Idempotency-Key": "k-slow"})
    assert retry.status == 409
    gate.set()
    resp = await first
    assert resp.status == 201, await resp.text()
    again = await service.upload_json(body(b"other"), headers={"Idempotency-Key": "k-slow"})
    assert again.status == 201 and (await again.json())["id"] == (await resp.json())["id"]
    assert len(await service.rows()) == 1


async def test_a_key_whose_job_failed_on_our_side_runs_the_retry(service):
    earlier = str(uuid_utils.uuid7())
    redis = await jobs.connect(service.settings.redis_url)
    try:
        await redis.set(key_name(service, "k-500"), earlier, ex=600)
        failed = Failed(error=ErrorInfo(code="internal_error", message="a fault", status=500))
        await jobs.publish_outcome(redis, earlier, failed)
    finally:
        await redis.aclose()
    retry = await service.upload_json(body(b"second chance"), headers={"Idempotency-Key": "k-500"})
    assert retry.status == 201, await retry.text()
    assert (await retry.json())["id"] != earlier
    [row] = await service.rows()
    assert await service.storage.get_bytes(row["storage_key"]) == b"second chance"


async def test_a_key_whose_job_was_refused_replays_the_refusal(service):
    first = await service.upload_json(
        {"target_type": "Task", "target_id": "1", "filename": "a.txt", "data": "not base64!"},
        headers={"Idempotency-Key": "k-400"},
    )
    again = await service.upload_json(body(b"fine this time"), headers={"Idempotency-Key": "k-400"})
    assert first.status == again.status == 400
    assert (await first.json()) == (await again.json())
    assert await service.rows() == []


async def test_an_upload_whose_job_cannot_be_queued_leaves_nothing_a_sweeper_could_queue_again(service, monkeypatch):
    enqueue = jobs.enqueue

    async def redis_down(*args, **kwargs):
        raise RedisConnectionError("Redis went away")

    monkeypatch.setattr(jobs, "enqueue", redis_down)
    first = await service.upload_json(body(b"once only"), headers={"Idempotency-Key": "k-down"})
    assert first.status == 503 and first.headers["Retry-After"]
    assert (await first.json())["error"]["code"] == "unavailable"
    assert await service.stored_keys() == []  # no bytes, no manifest: nothing for the sweeper to queue

    monkeypatch.setattr(jobs, "enqueue", enqueue)
    retry = await service.upload_json(body(b"once only"), headers={"Idempotency-Key": "k-down"})
    assert retry.status == 201, await retry.text()
    assert len(await service.rows()) == 1
