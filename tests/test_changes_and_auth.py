"""PATCH and DELETE as jobs; bearer auth, scopes, tenancy on every route; signed links."""

from __future__ import annotations

import base64
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest

from services.core import signing
from services.core.auth import READ, WRITE
from tests.conftest import JWT_SECRET, jpeg_bytes
from tests.test_uploads import path_of


async def make_photo(svc) -> dict:
    resp = await svc.upload_json(
        {
            "target_type": "Task",
            "target_id": "1",
            "filename": "p.jpg",
            "data": base64.b64encode(jpeg_bytes(300, 200)).decode(),
        }
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_patch_changes_the_changeable_fields(service):
    record = await make_photo(service)
    resp = await service.client.patch(
        f"/v1/attachments/{record['id']}",
        headers=service.auth(),
        json={"name": "Renamed", "display_order": 5, "available": False, "status": "approved"},
    )
    assert resp.status == 200, await resp.text()
    changed = await resp.json()
    assert (changed["name"], changed["display_order"], changed["available"], changed["status"]) == (
        "Renamed",
        5,
        False,
        "approved",
    )
    [row] = await service.rows()
    assert row["name"] == "Renamed" and row["updated_at"] > row["created_at"]
    assert [e["event_type"] for e in await service.events()] == ["attachment.created", "attachment.updated"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"filename": "x.exe"}, "filename"),
        ({"name": ""}, "name"),
        ({"display_order": "1"}, "display_order"),
        ({"status": "done"}, "status"),
        ({"name": "x" * 256}, "name"),
    ],
)
async def test_patch_refuses_bad_changes(service, body, field):
    record = await make_photo(service)
    resp = await service.client.patch(f"/v1/attachments/{record['id']}", headers=service.auth(), json=body)
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == field


async def test_delete_is_a_soft_delete(service):
    record = await make_photo(service)
    resp = await service.client.delete(f"/v1/attachments/{record['id']}", headers=service.auth())
    assert resp.status == 204
    [row] = await service.rows()
    assert row["canceled_at"] is not None
    again = await service.client.delete(f"/v1/attachments/{record['id']}", headers=service.auth())
    assert again.status == 404
    patch = await service.client.patch(f"/v1/attachments/{record['id']}", headers=service.auth(), json={"name": "x"})
    assert patch.status == 404
    assert (await service.client.get(path_of(record["file"]["original"]))).status == 404


async def test_missing_attachment_is_404(service):
    missing = "01900000-0000-7000-8000-000000000000"
    for method in ("patch", "delete"):
        resp = await getattr(service.client, method)(
            f"/v1/attachments/{missing}", headers=service.auth(), json={"name": "x"}
        )
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_another_tenant_cannot_read_download_change_or_delete(service):
    record = await make_photo(service)
    other = service.auth(service.other_account())
    ident = record["id"]
    checks = [
        service.client.get(f"/v1/attachments/{ident}", headers=other),
        service.client.get(f"/v1/attachments/{ident}/file", headers=other),
        service.client.get(f"/v1/attachments/{ident}/file/thumbnail", headers=other),
        service.client.patch(f"/v1/attachments/{ident}", headers=other, json={"name": "mine now"}),
        service.client.delete(f"/v1/attachments/{ident}", headers=other),
    ]
    for request in checks:
        resp = await request
        assert resp.status == 404, resp.url
    listed = await (await service.client.get("/v1/attachments?target_type=Task&target_id=1", headers=other)).json()
    assert listed["attachments"] == []
    [row] = await service.rows()
    assert row["name"] == "p.jpg" and row["canceled_at"] is None


async def test_missing_or_bad_tokens_are_401_and_missing_scope_403(service):
    url = "/v1/attachments?target_type=Task&target_id=1"
    assert (await service.client.get(url)).status == 401
    assert (await service.client.get(url, headers={"Authorization": "Bearer nonsense"})).status == 401
    forged = jwt.encode(
        {"account": service.account, "sub": "x", "scope": READ},
        "a-wrong-secret-that-is-long-enough-for-hs256",
        algorithm="HS256",
    )
    assert (await service.client.get(url, headers={"Authorization": f"Bearer {forged}"})).status == 401
    expired = jwt.encode(
        {"account": service.account, "sub": "x", "scope": READ, "exp": int(time.time()) - 3600},
        JWT_SECRET,
        algorithm="HS256",
    )
    resp = await service.client.get(url, headers={"Authorization": f"Bearer {expired}"})
    assert resp.status == 401 and "expired" in (await resp.json())["error"]["message"]

    read_only = service.auth(scope=READ)
    assert (await service.client.get(url, headers=read_only)).status == 200
    resp = await service.upload_json(
        {"target_type": "Task", "target_id": "1", "data": "aGk=", "filename": "a.txt"}, headers=read_only
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "insufficient_scope"
    write_only = service.auth(scope=WRITE)
    assert (await service.client.get(url, headers=write_only)).status == 200


async def test_seed_scope_aliases_are_accepted(service):
    resp = await service.upload_json(
        {"target_type": "Task", "target_id": "1", "data": "aGk=", "filename": "a.txt"},
        headers=service.auth(scope="task_management_write"),
    )
    assert resp.status == 201
    url = "/v1/attachments?target_type=Task&target_id=1"
    assert (await service.client.get(url, headers=service.auth(scope="task_management_read"))).status == 200
    assert (await service.client.get(url, headers=service.auth(scope="something_else"))).status == 403


async def test_tampered_or_expired_signed_links_are_refused(service):
    record = await make_photo(service)
    link = urlsplit(record["file"]["thumbnail"])
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert (await service.client.get(f"{link.path}?{urlencode(query)}")).status == 200

    small_path = link.path.replace("/thumbnail", "/small")
    assert (await service.client.get(f"{small_path}?{urlencode(query)}")).status == 403
    longer = {**query, "expires": str(int(query["expires"]) + 3600)}
    assert (await service.client.get(f"{link.path}?{urlencode(longer)}")).status == 403
    assert (await service.client.get(link.path)).status == 403

    past = int(time.time()) - 10
    path = signing.signed_path(service.settings.link_secret, record["id"], "original", past)
    resp = await service.client.get(path)
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "link_expired"
