"""The worker times each stage of an ingest job, so /metrics says where an upload's time goes."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from tests.conftest import jpeg_bytes
from tests.test_uploads import multipart
from workers.metrics import STAGES


def stage_counts() -> dict[str, float]:
    return {
        stage: REGISTRY.get_sample_value("attachd_ingest_stage_seconds_count", {"stage": stage}) or 0.0
        for stage in STAGES
    }


def grown_since(before: dict[str, float]) -> dict[str, float]:
    return {stage: count - before[stage] for stage, count in stage_counts().items()}


async def test_a_jpeg_upload_is_timed_in_every_stage(service):
    before = stage_counts()
    resp = await service.client.post(
        "/v1/attachments",
        headers=service.auth(),
        data=multipart(("photo.jpg", jpeg_bytes(1200, 800), "image/jpeg"), target_type="Task", target_id="1"),
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["file"]["thumbnail"] is not None

    # "finish" is observed once the outcome is published, which may be just after the response.
    deadline = time.monotonic() + 10
    while not (grown := grown_since(before))["finish"] and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert grown == {stage: 1.0 for stage in STAGES}
    exposed = await (await service.client.get("/metrics")).text()
    assert 'attachd_ingest_stage_seconds_count{stage="thumbnail"}' in exposed
