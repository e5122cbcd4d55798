"""Upload first, link later (EspoCRM), the purge of unclaimed uploads, and the workflow fields."""

from __future__ import annotations

import base64
import uuid

import pytest

from services.core.errors import ApiError
from services.core.validation import check_link_source
from workers.context import WorkerContext
from workers.targets import purge_unlinked


async def unlinked(svc, name: str, parent_type: str = "Note", field: str = "attachments") -> dict:
    resp = await svc.upload_json(
        {
            "name": name,
            "parent_type": parent_type,
            "field": field,
            "data": "data:text/plain;base64," + base64.b64encode(name.encode()).decode(),
        }
    )
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    assert record["target_id"] is None
    return record


async def linked_names(svc, target_id: str = "n1") -> list[str]:
    resp = await svc.client.get(
        f"/v1/attachments?target_type=Note&target_id={target_id}&order_by=name", headers=svc.auth()
    )
    return [a["name"] for a in (await resp.json())["attachments"]]


async def put_links(svc, body: dict, path: str = "/v1/targets/Note/n1/links/attachments"):
    return await svc.client.put(path, json=body, headers=svc.auth())


async def test_uploads_stay_unlinked_until_a_record_lists_them(service):
    a, b, c = [await unlinked(service, n) for n in ("a.txt", "b.txt", "c.txt")]
    assert await linked_names(service) == []
    resp = await put_links(service, {"ids": [a["id"], b["id"]]})
    assert resp.status == 200, await resp.text()
    assert [r["field"] for r in (await resp.json())["attachments"]] == ["attachments", "attachments"]
    assert await linked_names(service) == ["a.txt", "b.txt"]
    # Setting the list replaces it: b is unlinked (taken off the note, not deleted), c joins.
    await put_links(service, {"ids": [a["id"], c["id"]]})
    assert await linked_names(service) == ["a.txt", "c.txt"]
    rows = {r["name"]: r for r in await service.rows()}
    b_row = rows["b.txt"]
    assert (b_row["target_type"], b_row["target_id"], b_row["canceled_at"], list(b_row["ancestors"])) == (
        None,
        None,
        None,
        [],
    )
    assert b_row["unlinked_at"] is not None and rows["a.txt"]["unlinked_at"] is None
    one = await service.client.get(f"/v1/attachments/{b['id']}", headers=service.auth())
    assert one.status == 200 and (await one.json())["target_id"] is None
    events = [e["event_type"] for e in await service.events()]
    assert events.count("attachment.linked") == 3 and events.count("attachment.unlinked") == 1
    # ... so it can be linked again, to another record or back to this one
    assert (await put_links(service, {"ids": [b["id"]]}, "/v1/targets/Note/n2/links/attachments")).status == 200
    assert await linked_names(service, "n2") == ["b.txt"]
    assert (await service.rows())[1]["unlinked_at"] is None


async def test_a_single_file_field_replaces_its_file(service):
    first = await unlinked(service, "v1.txt", parent_type="Document", field="file")
    second = await unlinked(service, "v2.txt", parent_type="Document", field="file")
    path = "/v1/targets/Document/d1/links/file"
    assert (await put_links(service, {"id": first["id"]}, path)).status == 200
    assert (await put_links(service, {"id": second["id"]}, path)).status == 200
    resp = await service.client.get("/v1/attachments?target_type=Document&target_id=d1", headers=service.auth())
    assert [a["name"] for a in (await resp.json())["attachments"]] == ["v2.txt"]
    # the replaced file waits unlinked, and may become another document's
    replaced = {r["name"]: r for r in await service.rows()}["v1.txt"]
    assert (replaced["target_id"], replaced["canceled_at"]) == (None, None)
    assert (await put_links(service, {"id": first["seq"]}, "/v1/targets/Document/d2/links/file")).status == 200
    resp = await service.client.get("/v1/attachments?target_type=Document&target_id=d2", headers=service.auth())
    assert [a["name"] for a in (await resp.json())["attachments"]] == ["v1.txt"]


async def test_a_file_is_linked_and_unlinked_with_its_versions_and_what_is_nested_under_it(service):
    v1 = await unlinked(service, "plan.txt")
    await put_links(service, {"ids": [v1["id"]]})
    v2 = await service.upload_json({"filename": "plan-2.txt", "data": "Mg==", "version_of": v1["id"]})
    assert v2.status == 201, await v2.text()
    v2_record = await v2.json()
    assert (v2_record["target_id"], v2_record["field"], v2_record["version"]) == ("n1", "attachments", 2)
    child = await service.upload_json(
        {"filename": "annex.txt", "data": "YQ==", "parent_attachment_id": v2_record["id"]}
    )
    assert (await child.json())["ancestors"] == [f"Attachment:{v2_record['id']}", "Note:n1"]
    # the latest stays listed: its older version is not unlinked from under it
    assert (await put_links(service, {"ids": [v2_record["id"]]})).status == 200
    assert all(r["target_id"] for r in await service.rows())
    # unlinked: both versions, and what is nested under the file no longer sits under the note
    assert (await put_links(service, {"ids": []})).status == 200
    rows = {r["filename"]: r for r in await service.rows()}
    assert (rows["plan.txt"]["target_id"], rows["plan-2.txt"]["target_id"]) == (None, None)
    assert list(rows["annex.txt"]["ancestors"]) == [f"Attachment:{v2_record['id']}"]
    # linked again elsewhere: the chain comes along
    assert (await put_links(service, {"ids": [v2_record["id"]]}, "/v1/targets/Note/n2/links/attachments")).status == 200
    rows = {r["filename"]: r for r in await service.rows()}
    assert (rows["plan.txt"]["target_id"], rows["plan-2.txt"]["target_id"]) == ("n2", "n2")
    assert list(rows["annex.txt"]["ancestors"]) == [f"Attachment:{v2_record['id']}", "Note:n2"]
    resp = await service.client.get(
        "/v1/attachments?target_type=Note&target_id=n2&descendants=true&versions=all&order_by=name",
        headers=service.auth(),
    )
    assert [a["filename"] for a in (await resp.json())["attachments"]] == ["annex.txt", "plan-2.txt", "plan.txt"]


async def test_linking_someone_elses_or_an_already_linked_upload_is_refused(service):
    mine = await unlinked(service, "mine.txt")
    await put_links(service, {"ids": [mine["id"]]})
    resp = await put_links(service, {"ids": [mine["id"]]}, "/v1/targets/Note/n2/links/attachments")
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == "ids[0]"
    other = service.other_account()
    resp = await service.client.put(
        "/v1/targets/Note/n1/links/attachments", json={"ids": [mine["id"]]}, headers=service.auth(other)
    )
    assert resp.status == 400
    assert await linked_names(service) == ["mine.txt"]
    bad = await put_links(service, {"ids": ["not-a-uuid"]})
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "ids[0]"


async def test_the_unlinked_ttl_counts_from_when_an_upload_was_unlinked(make_service):
    async with make_service(unlinked_ttl_s=3600) as svc:
        old = await unlinked(svc, "old.txt")
        await svc.pool.execute(
            "UPDATE attachments SET created_at = now() - interval '2 hours' WHERE id = $1", uuid.UUID(old["id"])
        )
        await put_links(svc, {"ids": [old["id"]]})
        await put_links(svc, {"ids": []})  # made two hours ago, unlinked just now

        async def purged() -> int:
            wctx = await WorkerContext.open(svc.settings)
            try:
                return await purge_unlinked({"attachd": wctx})
            finally:
                await wctx.close()

        assert await purged() == 0
        assert [r["name"] for r in await svc.rows()] == ["old.txt"]
        await svc.pool.execute(
            "UPDATE attachments SET unlinked_at = now() - interval '61 minutes' WHERE id = $1", uuid.UUID(old["id"])
        )
        assert await purged() == 1
        assert await svc.rows() == []
        assert all(old["id"] not in key for key in await svc.stored_keys())


async def test_unclaimed_uploads_are_purged_with_their_bytes(make_service):
    async with make_service(unlinked_ttl_s=0) as svc:
        orphan = await unlinked(svc, "orphan.txt")
        keep = await unlinked(svc, "keep.txt")
        await put_links(svc, {"ids": [keep["id"]]})
        wctx = await WorkerContext.open(svc.settings)
        try:
            assert await purge_unlinked({"attachd": wctx}) >= 1  # every account's: other tests' too
        finally:
            await wctx.close()
        assert [r["name"] for r in await svc.rows()] == ["keep.txt"]
        assert all(orphan["id"] not in key for key in await svc.stored_keys())
        assert any(keep["id"] in key for key in await svc.stored_keys())


async def test_workflow_fields_are_stored_and_filtered(service):
    resp = await service.upload_json(
        {
            "target_type": "Task",
            "target_id": "1",
            "filename": "review.txt",
            "data": "cmV2aWV3",
            "available": False,
            "status": "pending",
            "created_from": "rework",
            "publish": "internal",
            "impersonator_id": "res-7",
            "session_token": None,
        }
    )
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    assert (
        record["available"],
        record["status"],
        record["created_from"],
        record["publish"],
        record["impersonator_id"],
    ) == (False, "pending", "rework", "internal", "res-7")
    await service.upload_json({"target_type": "Task", "target_id": "1", "filename": "ok.txt", "data": "b2s="})
    resp = await service.client.get(
        "/v1/attachments?target_type=Task&target_id=1&available=true", headers=service.auth()
    )
    assert [a["filename"] for a in (await resp.json())["attachments"]] == ["ok.txt"]


@pytest.mark.parametrize("sub_type", ["User", "Application", "Contact", "Resource"])
async def test_creator_types_come_from_the_token(service, sub_type):
    resp = await service.upload_json(
        {"target_type": "Task", "target_id": "1", "filename": "a.txt", "data": "YQ=="},
        headers=service.auth(sub=f"{sub_type.lower()}-1", sub_type=sub_type),
    )
    assert (await resp.json())["created_by"] == {"type": sub_type, "id": f"{sub_type.lower()}-1"}


@pytest.mark.parametrize(
    "field, value",
    [
        ("status", "done"),
        ("created_from", "email"),
        ("publish", "everyone"),
        ("available", "yes"),
        ("attachment_type", "PHOTO"),
        ("name", "x" * 256),
        ("content_type", "t/" + "x" * 100),
    ],
)
async def test_out_of_range_workflow_values_name_the_field(service, field, value):
    resp = await service.upload_json(
        {"target_type": "Task", "target_id": "1", "filename": "a.txt", "data": "YQ==", field: value}
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == field
    assert await service.rows() == []


async def test_what_a_contact_creates_is_published_to_all(service):
    contact = service.auth(sub="contact-7", sub_type="Contact")
    upload = {"target_type": "Ticket", "target_id": "1", "filename": "a.txt", "data": "YQ=="}
    refused = await service.upload_json({**upload, "publish": "internal"}, headers=contact)
    assert refused.status == 400
    assert (await refused.json())["error"]["field"] == "publish"
    assert await service.rows() == []
    made = await service.upload_json(upload, headers=contact)
    assert made.status == 201 and (await made.json())["publish"] == "all"
    by_a_user = await service.upload_json({**upload, "publish": "internal"})
    assert by_a_user.status == 201 and (await by_a_user.json())["publish"] == "internal"


# --- file-system links (Autotask's FILE_LINK and FOLDER_LINK) -------------------------------------------

UNC = "\\\\fileserver\\projects\\2024\\plan.docx"


@pytest.mark.parametrize(
    "url", ["http://intranet/x", "file:///C:/Shared/plan.docx", "file://fileserver/projects/plan.docx", UNC]
)
@pytest.mark.parametrize("kind", ["FILE_LINK", "FOLDER_LINK"])
def test_a_file_or_folder_link_may_point_into_a_file_system(kind, url):
    check_link_source(kind, url)


@pytest.mark.parametrize(
    "kind, url",
    [
        ("URL", "file:///etc/passwd"),
        ("URL", UNC),
        ("FILE_ATTACHMENT", "file:///etc/passwd"),
        ("FILE_ATTACHMENT", UNC),
        ("FILE_LINK", "\\\\server"),
        ("FILE_LINK", "\\\\server\\"),
        ("FILE_LINK", "\\server\\share"),
        ("FOLDER_LINK", "file://"),
        ("FOLDER_LINK", "ftp://server/x"),
        ("FOLDER_LINK", "C:\\Shared"),
    ],
)
def test_other_urls_are_refused(kind, url):
    with pytest.raises(ApiError) as caught:
        check_link_source(kind, url)
    assert (caught.value.code, caught.value.field) == ("invalid_url", "url")


@pytest.mark.parametrize("url", ["file:///C:/Shared/plan.docx", UNC])
async def test_file_system_links_are_stored_never_fetched(service, url):
    for kind in ("FILE_LINK", "FOLDER_LINK"):
        resp = await service.upload_json(
            {"target_type": "Ticket", "target_id": "1", "attachment_type": kind, "url": url}
        )
        assert resp.status == 201, await resp.text()
        record = await resp.json()
        assert (record["attachment_type"], record["url"], record["name"], record["size"]) == (kind, url, url, None)
        assert record["file"] == {"original": None, "thumbnail": None, "small": None}
    assert await service.stored_keys() == []
    # as a source to fetch, or a URL link, it is refused: attachd fetches http and https only
    for kind in ("URL", "FILE_ATTACHMENT"):
        resp = await service.upload_json(
            {"target_type": "Ticket", "target_id": "1", "attachment_type": kind, "url": url}
        )
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == "url"
    assert len(await service.rows()) == 2
