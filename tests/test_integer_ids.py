"""Integer ids: every attachment's ``seq`` names it wherever its UUID does, within the caller's account only."""

from __future__ import annotations

import base64
import uuid

import pytest

from services.core import repository
from services.core.contract import CancelJob, SetLinksJob, UnknownJob, decode_job
from services.core.errors import ApiError
from services.core.validation import parse_attachment_ref, path_ref

SOME_UUID = "0190a000-0000-7000-8000-000000000000"


async def upload(svc, filename: str, **fields) -> dict:
    body = {"target_type": "Task", "target_id": "1", "filename": filename, **fields}
    body["data"] = base64.b64encode(filename.encode()).decode()
    resp = await svc.upload_json(body)
    assert resp.status == 201, await resp.text()
    return await resp.json()


# --- the pure rules ---------------------------------------------------------------------------------


def test_a_path_names_an_attachment_by_uuid_or_by_integer_id():
    assert path_ref(SOME_UUID) == uuid.UUID(SOME_UUID)
    assert path_ref("42") == 42
    assert path_ref(str(2**63 - 1)) == 2**63 - 1
    for nothing in ("0", str(2**63), "-1", "4 2", "abc", "１２"):
        assert path_ref(nothing) is None, nothing


def test_a_field_takes_a_uuid_a_number_or_digits():
    assert parse_attachment_ref(None, "f") is None
    assert parse_attachment_ref(7, "f") == 7
    assert parse_attachment_ref("7", "f") == 7
    assert parse_attachment_ref(SOME_UUID, "f") == uuid.UUID(SOME_UUID)
    for bad in (0, -3, True, 2**63, "x", 1.5, ["7"], {"id": 7}):
        with pytest.raises(ApiError) as caught:
            parse_attachment_ref(bad, "version_of")
        assert caught.value.field == "version_of" and caught.value.status == 400


def test_jobs_carry_either_kind_of_id():
    base = {"v": 1, "job_id": "j", "account_id": "a"}
    job = decode_job("cancel_attachment", {**base, "attachment_id": 12})
    assert isinstance(job, CancelJob) and job.attachment_id == 12
    links = decode_job(
        "set_links", {**base, "target_type": "Note", "target_id": "1", "field": "f", "ids": [SOME_UUID, 3]}
    )
    assert isinstance(links, SetLinksJob) and links.ids == [uuid.UUID(SOME_UUID), 3]
    with pytest.raises(UnknownJob) as caught:
        decode_job("cancel_attachment", {**base, "attachment_id": 0})
    assert caught.value.field == "attachment_id"


# --- through the API ----------------------------------------------------------------------------------


async def test_an_attachment_is_read_changed_and_deleted_by_its_integer_id(service):
    made = await upload(service, "notes.txt")
    seq = made["seq"]
    assert isinstance(seq, int) and seq > 0
    by_seq = await service.client.get(f"/v1/attachments/{seq}", headers=service.auth())
    assert by_seq.status == 200
    assert (await by_seq.json())["id"] == made["id"]
    file = await service.client.get(f"/v1/attachments/{seq}/file", headers=service.auth())
    assert file.status == 200 and await file.read() == b"notes.txt"
    async with service.pool.acquire() as conn:  # what a profile with integer ids renders references with
        made_id = uuid.UUID(made["id"])
        assert await repository.seqs_of(conn, service.account, [made_id]) == {made_id: seq}
        assert await repository.seqs_of(conn, service.other_account(), [made_id]) == {}

    patched = await service.client.patch(f"/v1/attachments/{seq}", json={"name": "Minutes"}, headers=service.auth())
    assert patched.status == 200, await patched.text()
    assert (await patched.json())["id"] == made["id"]
    assert [r["name"] for r in await service.rows()] == ["Minutes"]

    deleted = await service.client.delete(f"/v1/attachments/{seq}", headers=service.auth())
    assert deleted.status == 204
    assert (await service.rows())[0]["canceled_at"] is not None
    assert (await service.client.get(f"/v1/attachments/{seq}", headers=service.auth())).status == 404
    again = await service.client.delete(f"/v1/attachments/{seq}", headers=service.auth())
    assert again.status == 404


async def test_another_accounts_integer_id_is_not_found(service):
    made = await upload(service, "private.txt")
    other = service.auth(service.other_account())
    path = f"/v1/attachments/{made['seq']}"
    assert (await service.client.get(path, headers=other)).status == 404
    assert (await service.client.get(f"{path}/file", headers=other)).status == 404
    patched = await service.client.patch(path, json={"name": "mine now"}, headers=other)
    assert patched.status == 404
    assert (await patched.json())["error"]["code"] == "not_found"
    assert (await service.client.delete(path, headers=other)).status == 404
    [row] = await service.rows()
    assert (row["name"], row["canceled_at"]) == ("private.txt", None)


@pytest.mark.parametrize("path", ["0", "99999999999999999999", str(2**63)])
async def test_an_integer_id_no_attachment_can_have_is_not_found(service, path):
    resp = await service.client.get(f"/v1/attachments/{path}", headers=service.auth())
    assert resp.status == 404


async def test_links_take_integer_ids(service):
    uploads = []
    for name in ("a.txt", "b.txt"):
        resp = await service.upload_json(
            {"parent_type": "Note", "field": "attachments", "filename": name, "data": "YQ=="}
        )
        uploads.append(await resp.json())
    a, b = uploads
    resp = await service.client.put(
        "/v1/targets/Note/7/links/attachments",
        json={"ids": [a["seq"], str(b["seq"]), a["id"]]},
        headers=service.auth(),
    )
    assert resp.status == 200, await resp.text()
    assert [r["id"] for r in (await resp.json())["attachments"]] == [a["id"], b["id"]]
    other = await service.client.put(
        "/v1/targets/Note/8/links/attachments", json={"ids": [a["seq"]]}, headers=service.auth(service.other_account())
    )
    assert other.status == 400 and (await other.json())["error"]["field"] == "ids[0]"
    bad = await service.client.put(
        "/v1/targets/Note/7/links/attachments", json={"ids": [a["seq"], 0]}, headers=service.auth()
    )
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "ids[1]"
