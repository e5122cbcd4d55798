"""A client mistake is a 4xx with the one error shape, on every route: never a 500, never a traceback."""

from __future__ import annotations

import base64
import uuid

import pytest

from services.core import jobs
from tests.conftest import jpeg_bytes

ID = "0196e853-0000-7000-8000-000000000000"
NUL = "%00"

# (method, path with query, JSON body or None). Each is wrong in one way a client could get wrong.
MALFORMED = [
    ("GET", f"/v1/attachments?target_type={NUL}&target_id=1", None),
    ("GET", f"/v1/attachments?target_type=Task&target_id={NUL}", None),
    ("GET", f"/v1/attachments?ancestor={NUL}:1", None),
    ("GET", f"/v1/attachments?ancestor=Ticket:{NUL}", None),
    ("GET", "/v1/attachments?ancestor=Ticket:", None),
    ("GET", f"/v1/attachments/count?target_type={NUL}&target_id=1", None),
    ("GET", f"/v1/attachments/count?ancestor={NUL}:1", None),
    ("GET", "/v1/attachments?target_type=Task&target_id=1&cursor=%00%ff", None),
    ("GET", "/v1/attachments?target_type=Task&target_id=1&cursor=bm90IGEgY3Vyc29y", None),
    ("GET", "/v1/attachments?order_by=%00", None),
    ("GET", "/v1/attachments?limit=-1", None),
    ("GET", "/v1/attachments?limit=1e9", None),
    ("GET", "/v1/attachments?descendants=maybe&target_type=Task&target_id=1", None),
    ("GET", "/v1/attachments?nonsense=1", None),
    ("GET", "/v1/attachments/not-a-uuid", None),
    ("GET", "/v1/attachments/not-a-uuid/file", None),
    ("GET", f"/v1/attachments/{ID}/file/huge", None),
    ("GET", f"/v1/files/{ID}/original?expires=%00&signature=x", None),
    ("POST", "/v1/attachments/query", {"filter": [{"field": "name", "op": "eq", "value": "\u0000"}]}),
    ("POST", "/v1/attachments/query", {"filter": [{"field": "target_type", "op": "in", "value": [None, {}]}]}),
    ("POST", "/v1/attachments/query", {"filter": "name = 1"}),
    ("POST", "/v1/attachments/query", {"filter": [], "cursor": "\u0000"}),
    ("POST", "/v1/attachments/query/count", {"filter": [{"op": "or", "items": "x"}]}),
    ("POST", "/v1/attachments", {"target_type": "Task\u0000", "target_id": "1", "url": "https://example.test/a"}),
    ("POST", "/v1/attachments", {"target_type": "Task", "target_id": "1", "data": "\u0000"}),
    ("POST", "/v1/attachments", {"target_type": "Task", "target_id": "1", "url": "http://\u0000/"}),
    ("POST", "/v1/attachments", {"attachments": [{}] * 3, "mode": "sometimes"}),
    ("PATCH", f"/v1/attachments/{ID}", {"name": "\u0000"}),
    ("PATCH", f"/v1/attachments/{ID}", {"display_order": "first"}),
    ("PATCH", "/v1/attachments/not-a-uuid", {"name": "x"}),
    ("DELETE", "/v1/attachments/not-a-uuid", None),
    ("GET", "/v1/uploads/not-a-uuid", None),
    ("POST", f"/v1/sessions/{NUL}/close", None),
    ("POST", f"/v1/sessions/a{NUL}b/close", None),
    ("PUT", f"/v1/targets/Ticket/{NUL}", {"parent": None}),
    ("PUT", "/v1/targets/Ticket/1", {"parent": {"type": "Project", "id": "\u0000"}}),
    ("PUT", f"/v1/targets/Note/1/links/{NUL}", {"ids": []}),
    ("PUT", "/v1/targets/Note/1/links/attachments", {"ids": ["not-a-uuid"]}),
]


@pytest.mark.parametrize(("method", "path", "body"), MALFORMED, ids=[f"{m} {p} {b}" for m, p, b in MALFORMED])
async def test_a_client_mistake_is_a_4xx_in_the_error_shape(service, method, path, body):
    resp = await service.client.request(method, path, json=body, headers=service.auth())
    text = await resp.text()
    assert 400 <= resp.status < 500, f"{resp.status}: {text}"
    assert "Traceback" not in text
    error = (await resp.json())["error"]
    assert error["code"] and error["message"]
    assert await service.rows() == []


async def test_control_characters_in_read_parameters_name_the_parameter(service):
    for query, field in (
        (f"target_type={NUL}&target_id=1", "target_type"),
        (f"target_type=Task&target_id=a{NUL}", "target_id"),
        (f"ancestor=Ticket:{NUL}", "ancestor"),
    ):
        resp = await service.client.get(f"/v1/attachments?{query}", headers=service.auth())
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == field


async def test_a_session_token_with_a_control_character_is_refused_at_once(service):
    resp = await service.client.post(f"/v1/sessions/a{NUL}b/close", headers=service.auth())
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == "session_token"


async def test_a_job_that_breaks_the_contract_still_answers_its_waiter(service):
    """A job enqueued directly (as internal services do) with input the contract refuses: its outcome says
    failed, naming the field, instead of leaving the upload "queued" for good."""
    job_id = str(uuid.uuid4())
    payload = {"v": 1, "job_id": job_id, "account_id": service.account, "session_token": "a\x00b"}
    redis = await jobs.connect(service.settings.redis_url)
    try:
        await redis.set(jobs.owner_key(job_id), service.account, ex=600)
        await redis.enqueue_job("close_session", payload, _job_id=job_id)  # as any arq client writes it
    finally:
        await redis.aclose()
    status = await service.finished_upload(f"/v1/uploads/{job_id}", timeout=20)
    assert status["status"] == "failed"
    assert (status["error"]["code"], status["error"]["field"]) == ("invalid_job", "session_token")


async def test_a_good_upload_after_the_battery_still_works(service):
    """The refusals above leave the service healthy: the same client uploads fine afterwards."""
    await service.client.get(f"/v1/attachments?target_type={NUL}&target_id=1", headers=service.auth())
    data = {"target_type": "Task", "target_id": "1", "filename": "a.jpg"}
    resp = await service.upload_json({**data, "data": base64.b64encode(jpeg_bytes(320, 200)).decode()})
    assert resp.status == 201, await resp.text()
