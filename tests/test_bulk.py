"""Many files in one request: all or nothing (Toggl Focus) and partial with per-file errors (ProjectCor)."""

from __future__ import annotations

import base64

import aiohttp

from tests.conftest import jpeg_bytes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bulk_form(fields: dict[str, str], files: list[tuple[str, bytes, str]]) -> aiohttp.FormData:
    """An atomic multipart bulk upload to Task 7: ``fields`` (e.g. ``names[0]``) and ``files`` parts."""
    form = aiohttp.FormData()
    for key, value in {"mode": "atomic", "target_type": "Task", "target_id": "7", **fields}.items():
        form.add_field(key, value)
    for filename, body, content_type in files:
        form.add_field("files", body, filename=filename, content_type=content_type)
    return form


def item(filename: str, data: bytes, **extra) -> dict:
    return {"target_type": "Task", "target_id": "7", "filename": filename, "data": b64(data), **extra}


async def test_atomic_bulk_creates_all(service):
    resp = await service.upload_json(
        {
            "mode": "atomic",
            "attachments": [
                item("a.txt", b"one", name="First", display_order=1),
                item("b.jpg", jpeg_bytes(200, 100), display_order=2),
            ],
        }
    )
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert [a["name"] for a in body["attachments"]] == ["First", "b.jpg"]
    assert body["errors"] == [] and body["files_q"] == 2
    assert len(await service.rows()) == 2


async def test_atomic_bulk_with_one_bad_file_creates_nothing(service):
    resp = await service.upload_json(
        {
            "mode": "atomic",
            "attachments": [
                item("a.txt", b"fine"),
                item("b.jpg", b"<html><body>not a photo</body></html>"),
                item("c.jpg", jpeg_bytes(120, 80)),
                item("d.exe", b"MZ" * 10),
            ],
        }
    )
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == "upload_refused"
    assert [(e["index"], e["code"]) for e in body["errors"]] == [(1, "content_mismatch"), (3, "invalid_extension")]
    assert await service.rows() == []
    assert await service.settled_keys() == []


async def test_multipart_atomic_bulk_refuses_an_oversized_file_and_keeps_nothing(make_service):
    async with make_service(max_file_bytes=20_000) as svc:
        form = bulk_form(
            {"names[0]": "Small", "display_orders[1]": "9"},
            [("small.txt", b"tiny", "text/plain"), ("huge.jpg", jpeg_bytes(3000, 3000), "image/jpeg")],
        )
        resp = await svc.client.post("/v1/attachments", data=form, headers=svc.auth())
        assert resp.status == 413, await resp.text()
        errors = (await resp.json())["errors"]
        assert [(e["index"], e["code"], e["filename"]) for e in errors] == [(1, "size_exceeded", "huge.jpg")]
        assert await svc.rows() == []
        assert await svc.settled_keys() == []


async def test_more_files_than_the_limit_is_a_400_before_any_work(make_service):
    async with make_service(max_files_per_request=3) as svc:
        resp = await svc.upload_json({"attachments": [item(f"{i}.txt", b"x") for i in range(4)]})
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == "attachments"
        form = aiohttp.FormData()
        form.add_field("target_type", "Task")
        form.add_field("target_id", "7")
        for i in range(4):
            form.add_field("file", b"x", filename=f"{i}.txt", content_type="text/plain")
        resp = await svc.client.post("/v1/attachments", data=form, headers=svc.auth())
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "too_many_files"
        assert await svc.rows() == [] and await svc.stored_keys() == []


async def test_partial_keeps_the_good_files_and_reports_the_bad(make_service):
    async with make_service(max_file_bytes=20_000) as svc:
        await svc.upload_json(item("already.txt", b"there before"))
        form = aiohttp.FormData()
        form.add_field("mode", "partial")
        form.add_field("target_type", "Task")
        form.add_field("target_id", "7")
        form.add_field("created_from", "task_panel")
        form.add_field("file", b"good", filename="good.txt", content_type="text/plain")
        form.add_field("file", jpeg_bytes(3000, 3000), filename="huge.jpg", content_type="image/jpeg")
        form.add_field("file", b"MZ" * 10, filename="tool.exe", content_type="application/octet-stream")
        form.add_field("file", jpeg_bytes(300, 200), filename="photo.jpg", content_type="image/jpeg")
        resp = await svc.client.post("/v1/attachments", data=form, headers=svc.auth())
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        assert [a["filename"] for a in body["attachments"]] == ["good.txt", "photo.jpg"]
        assert all(a["created_from"] == "task_panel" for a in body["attachments"])
        assert [(e["filename"], e["code"]) for e in body["errors"]] == [
            ("huge.jpg", "size_exceeded"),
            ("tool.exe", "invalid_extension"),
        ]
        assert all(e["message"] for e in body["errors"])
        assert body["files_q"] == 3
        assert len(await svc.rows()) == 3
        assert len([k for k in await svc.stored_keys() if k.endswith("/original")]) == 3


async def test_multipart_bulk_gives_each_file_its_own_name_and_display_order(service):
    form = bulk_form(
        {"names[0]": "Floor plan", "display_orders[0]": "3", "display_orders[1]": "1"},
        [("plan.txt", b"plan", "text/plain"), ("door.jpg", jpeg_bytes(200, 100), "image/jpeg")],
    )
    resp = await service.client.post("/v1/attachments", data=form, headers=service.auth())
    assert resp.status == 201, await resp.text()
    made = [(a["name"], a["display_order"], a["filename"]) for a in (await resp.json())["attachments"]]
    assert made == [("Floor plan", 3, "plan.txt"), ("door.jpg", 1, "door.jpg")]
    rows = await service.rows()
    assert sorted((r["name"], r["display_order"]) for r in rows) == [("Floor plan", 3), ("door.jpg", 1)]


async def test_files_q_counts_what_the_target_lists_as_count_does(service):
    """ProjectCor's files_q: live latest versions on the task, never an old version or a deleted file."""
    v1 = await (await service.upload_json(item("plan.txt", b"v1"))).json()
    await service.upload_json(item("plan-2.txt", b"v2", version_of=v1["id"]))
    gone = await (await service.upload_json(item("gone.txt", b"x"))).json()
    assert (await service.client.delete(f"/v1/attachments/{gone['seq']}", headers=service.auth())).status == 204
    await service.upload_json(item("elsewhere.txt", b"y", target_id="8"))
    resp = await service.upload_json(
        {"mode": "partial", "attachments": [item("a.txt", b"a"), item("b.exe", b"MZ"), item("c.txt", b"c")]}
    )
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    count = await service.client.get("/v1/attachments/count?target_type=Task&target_id=7", headers=service.auth())
    assert body["files_q"] == (await count.json())["count"] == 3  # plan-2, a, c
