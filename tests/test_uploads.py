"""Uploads through the API, end to end: ingress -> Redis -> worker -> Postgres + storage -> query."""

from __future__ import annotations

import base64
import hashlib

import aiohttp
import pytest
import pyvips

from tests.conftest import jpeg_bytes, png_bytes


def multipart(*files: tuple[str, bytes, str], **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    for name, body, content_type in files:
        form.add_field("file", body, filename=name, content_type=content_type)
    return form


def path_of(url: str) -> str:
    """Signed links are absolute; the test client wants the path and query."""
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def dimensions(data: bytes) -> tuple[int, int]:
    image = pyvips.Image.new_from_buffer(data, "")
    return image.width, image.height


def assert_photo_record(record: dict, photo: bytes, *, name: str, filename: str) -> None:
    """The record of a 1200x800 JPEG uploaded to Task 42 with display_order 3."""
    assert record["name"] == name
    assert record["filename"] == filename
    assert record["content_type"] == "image/jpeg"
    assert record["size"] == len(photo)
    assert record["sha256"] == hashlib.sha256(photo).hexdigest()
    assert (record["width"], record["height"]) == (1200, 800)
    assert record["display_order"] == 3
    assert record["target_type"] == "Task" and record["target_id"] == "42"


async def test_multipart_jpeg_upload_is_stored_thumbnailed_and_readable(any_backend_service):
    svc = any_backend_service
    photo = jpeg_bytes(1200, 800)
    resp = await svc.client.post(
        "/v1/attachments",
        headers=svc.auth(),
        data=multipart(
            ("holiday.jpg", photo, "image/jpeg"), target_type="Task", target_id="42", name="Holiday", display_order="3"
        ),
    )
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    assert_photo_record(record, photo, name="Holiday", filename="holiday.jpg")
    assert record["created_by"] == {"type": "User", "id": "user-1"}

    original = await svc.client.get(path_of(record["file"]["original"]))
    assert original.status == 200
    assert await original.read() == photo
    for variant, size in (("thumbnail", (72, 48)), ("small", (161, 107))):
        resp = await svc.client.get(path_of(record["file"][variant]))
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/jpeg"
        assert dimensions(await resp.read()) == size

    [row] = await svc.rows()
    assert str(row["id"]) == record["id"]
    assert row["sha256"] == hashlib.sha256(photo).digest()
    assert await svc.storage.get_bytes(row["storage_key"]) == photo
    assert await svc.stored_keys() == sorted(
        [row["storage_key"], row["variants"]["thumbnail"]["key"], row["variants"]["small"]["key"]]
    )
    [event] = await svc.events()
    assert event["event_type"] == "attachment.created" and event["attachment_id"] == row["id"]


async def test_png_by_raw_base64_gets_exact_variants(service):
    image = png_bytes(640, 480)
    resp = await service.upload_json(
        {"target_type": "Task", "target_id": "7", "filename": "chart.png", "data": base64.b64encode(image).decode()}
    )
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    assert record["content_type"] == "image/png"
    assert (record["width"], record["height"]) == (640, 480)
    thumb = await service.client.get(f"/v1/attachments/{record['id']}/file/thumbnail", headers=service.auth())
    assert dimensions(await thumb.read()) == (72, 48)
    small = await service.client.get(f"/v1/attachments/{record['id']}/file/small", headers=service.auth())
    assert dimensions(await small.read()) == (161, 107)


async def test_data_uri_upload_names_the_file_from_name(service):
    text = b"hello, attachd\n"
    resp = await service.upload_json(
        {
            "target_type": "Note",
            "target_id": "n-1",
            "name": "test.txt",
            "data": "data:text/plain;base64," + base64.b64encode(text).decode(),
        }
    )
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    assert record["name"] == "test.txt"
    assert record["filename"] == "test.txt"
    assert record["content_type"] == "text/plain"
    assert record["file"]["thumbnail"] is None and record["file"]["small"] is None
    body = await service.client.get(f"/v1/attachments/{record['id']}/file", headers=service.auth())
    assert await body.read() == text


async def test_pdf_gets_null_variants(service):
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    resp = await service.client.post(
        "/v1/attachments",
        headers=service.auth(),
        data=multipart(("report.pdf", pdf, "application/pdf"), target_type="Task", target_id="1"),
    )
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    assert record["content_type"] == "application/pdf"
    assert record["file"]["original"] and record["file"]["thumbnail"] is None and record["file"]["small"] is None
    assert record["width"] is None
    [row] = await service.rows()
    assert row["variants"] is None


async def test_url_upload_is_fetched_by_the_worker(service, remote):
    photo = jpeg_bytes(800, 600)
    url = remote.add("/images/photo.jpg", photo, "image/jpeg")
    resp = await service.upload_json({"target_type": "Task", "target_id": "9", "url": url})
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    assert record["filename"] == "photo.jpg"
    assert record["size"] == len(photo)
    assert record["url"] == url
    assert remote.hits == ["/images/photo.jpg"]
    small = await service.client.get(path_of(record["file"]["small"]))
    assert dimensions(await small.read()) == (161, 107)


@pytest.mark.parametrize("kind", ["URL", "FILE_LINK", "FOLDER_LINK"])
async def test_link_types_store_no_bytes(service, remote, kind):
    resp = await service.upload_json(
        {
            "target_type": "Ticket",
            "target_id": "5",
            "attachment_type": kind,
            "url": "https://example.com/shared/folder",
            "name": "Specs",
        }
    )
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    assert record["attachment_type"] == kind
    assert record["url"] == "https://example.com/shared/folder"
    assert record["file"] == {"original": None, "thumbnail": None, "small": None}
    assert await service.stored_keys() == []
    assert remote.hits == []


async def test_a_link_with_no_name_is_named_after_its_url_cut_to_fit(service):
    long_url = "https://example.com/" + "d" * 400
    for url, name in (("https://example.com/a", "https://example.com/a"), (long_url, long_url[:254] + "…")):
        resp = await service.upload_json({"target_type": "T", "target_id": "1", "attachment_type": "URL", "url": url})
        assert resp.status == 201, await resp.text()
        record = await resp.json()
        assert (record["name"], record["url"]) == (name, url)
    assert [len(r["name"]) for r in await service.rows()] == [len("https://example.com/a"), 255]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"target_type": "Task", "target_id": "1"}, "data"),
        ({"target_type": "Task", "target_id": "1", "data": "aGk=", "url": "https://example.com/a.txt"}, "url"),
        ({"target_type": "Task", "target_id": "1", "attachment_type": "URL"}, "url"),
        (
            {"target_type": "Task", "target_id": "1", "attachment_type": "URL", "url": "https://e.com", "data": "aGk="},
            "data",
        ),
        ({"target_id": "1", "data": "aGk=", "filename": "a.txt"}, "target_type"),
        ({"target_type": "Task", "target_id": "1", "data": "aGk=", "filename": "a.txt", "colour": "red"}, "colour"),
        ({"target_type": "Task", "target_id": "1", "data": "aGk=", "filename": "a.txt", "status": "done"}, "status"),
        (
            {"target_type": "Task", "target_id": "1", "data": "aGk=", "filename": "a.txt", "display_order": "x"},
            "display_order",
        ),
    ],
)
async def test_bad_create_requests_name_the_field(service, body, field):
    resp = await service.upload_json(body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["field"] == field
    assert error["message"]
    assert await service.rows() == []
    assert await service.settled_keys() == []


async def test_multipart_with_file_and_data_is_refused(service):
    resp = await service.client.post(
        "/v1/attachments",
        headers=service.auth(),
        data=multipart(
            ("a.txt", b"hello", "text/plain"), target_type="Task", target_id="1", url="https://example.com/x.txt"
        ),
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == "url"
    assert await service.settled_keys() == []


async def test_respond_async_gives_202_and_a_status_url(service):
    resp = await service.upload_json(
        {"target_type": "Task", "target_id": "1", "filename": "a.txt", "data": base64.b64encode(b"later").decode()},
        headers={"Prefer": "respond-async"},
    )
    assert resp.status == 202
    body = await resp.json()
    assert body["status"] in ("queued", "in_progress", "complete")
    assert body["status_url"] == f"/v1/uploads/{body['id']}"
    status = await service.finished_upload(body["status_url"])
    assert status["status"] == "complete"
    assert status["attachment"]["id"] == body["id"]
    other = await service.client.get(body["status_url"], headers=service.auth(service.other_account()))
    assert other.status == 404


async def test_failed_async_upload_reports_its_error(service):
    resp = await service.upload_json(
        {"target_type": "Task", "target_id": "1", "filename": "a.txt", "data": "not base64!"},
        headers={"Prefer": "respond-async"},
    )
    assert resp.status == 202
    status = await service.finished_upload((await resp.json())["status_url"])
    assert status["status"] == "failed"
    assert status["error"]["code"] == "invalid_base64" and status["error"]["field"] == "data"


async def test_idempotency_key_returns_the_first_outcome(service):
    body = {
        "target_type": "Task",
        "target_id": "1",
        "filename": "once.txt",
        "data": base64.b64encode(b"only once").decode(),
    }
    first = await service.upload_json(body, headers={"Idempotency-Key": "k-1"})
    second = await service.upload_json(body, headers={"Idempotency-Key": "k-1"})
    assert first.status == second.status == 201
    assert (await first.json())["id"] == (await second.json())["id"]
    assert len(await service.rows()) == 1
    third = await service.upload_json(body, headers={"Idempotency-Key": "k-2"})
    assert (await third.json())["id"] != (await first.json())["id"]
    assert len(await service.rows()) == 2


async def test_several_files_in_one_multipart_request(service):
    resp = await service.client.post(
        "/v1/attachments",
        headers=service.auth(),
        data=multipart(
            ("a.jpg", jpeg_bytes(300, 200), "image/jpeg"),
            ("b.txt", b"notes", "text/plain"),
            target_type="Task",
            target_id="77",
        ),
    )
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert [a["filename"] for a in body["attachments"]] == ["a.jpg", "b.txt"]
    assert body["errors"] == [] and body["files_q"] == 2
    assert len(await service.rows()) == 2
