"""The raw-body upload: POST /v1/attachments with the file as the body and the fields in the query string."""

from __future__ import annotations

from services.core.jobs import QUEUE
from services.web.engines import REDIS
from tests.conftest import jpeg_bytes
from tests.test_uploads import assert_photo_record, dimensions, path_of

CREATE = "/v1/attachments"


async def raw(svc, body, query: str, content_type: str | None = "application/octet-stream", **headers: str):
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await svc.client.post(f"{CREATE}?{query}", data=body, headers={**svc.auth(), **headers})


async def error_of(resp, status: int) -> dict:
    assert resp.status == status, await resp.text()
    return (await resp.json())["error"]


async def assert_nothing_stored(svc) -> None:
    assert await svc.rows() == []
    assert await svc.settled_keys() == []


async def test_raw_jpeg_is_stored_thumbnailed_and_readable(any_backend_service):
    svc = any_backend_service
    photo = jpeg_bytes(1200, 800)
    resp = await raw(
        svc,
        photo,
        "target_type=Task&target_id=42&filename=photo.jpg&name=Site%20visit&display_order=3",
        content_type="image/jpeg",
    )
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    assert_photo_record(record, photo, name="Site visit", filename="photo.jpg")

    original = await svc.client.get(path_of(record["file"]["original"]))
    assert await original.read() == photo
    for variant, size in (("thumbnail", (72, 48)), ("small", (161, 107))):
        resp = await svc.client.get(path_of(record["file"][variant]))
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
        assert dimensions(await resp.read()) == size

    [row] = await svc.rows()
    assert str(row["id"]) == record["id"]
    assert await svc.storage.get_bytes(row["storage_key"]) == photo
    assert await svc.stored_keys() == sorted(
        [row["storage_key"], row["variants"]["thumbnail"]["key"], row["variants"]["small"]["key"]]
    )
    [event] = await svc.events()
    assert event["event_type"] == "attachment.created"


async def test_the_filename_can_come_from_content_disposition(service):
    photo = jpeg_bytes(300, 200)
    resp = await raw(
        service,
        photo,
        "target_type=Task&target_id=7",
        **{"Content-Disposition": 'attachment; filename="from header.jpg"'},
    )
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    assert record["filename"] == "from header.jpg"
    assert record["name"] == "from header.jpg"
    # RFC 5987 filename* wins over filename, as in a multipart part
    resp = await raw(
        service,
        photo,
        "target_type=Task&target_id=7",
        **{"Content-Disposition": "attachment; filename=\"plain.jpg\"; filename*=UTF-8''caf%C3%A9.jpg"},
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["filename"] == "café.jpg"
    # the query's filename wins over the header's, as a form field wins over the part's filename
    resp = await raw(
        service,
        photo,
        "target_type=Task&target_id=7&filename=query.jpg",
        **{"Content-Disposition": 'attachment; filename="header.jpg"'},
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["filename"] == "query.jpg"


async def test_a_body_with_no_content_type_is_a_file_too(service):
    resp = await raw(service, b"plain notes\n", "target_type=Task&target_id=1&filename=notes.txt", content_type=None)
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    assert record["content_type"] == "text/plain" and record["size"] == len(b"plain notes\n")


async def test_respond_async_and_the_status_url(service):
    resp = await raw(service, b"later\n", "target_type=Task&target_id=1&filename=later.txt", Prefer="respond-async")
    assert resp.status == 202, await resp.text()
    status = await service.finished_upload((await resp.json())["status_url"])
    assert status["status"] == "complete" and status["attachment"]["filename"] == "later.txt"


async def test_missing_or_bad_fields_are_a_400_naming_the_field(service):
    cases = [
        ("target_id=1&filename=a.txt", "target_type"),
        ("target_type=Task&filename=a.txt", "target_id"),
        ("target_type=Task&target_id=1&filename=a.txt&color=red", "color"),
        ("target_type=Task&target_id=1&filename=a.txt&display_order=first", "display_order"),
        ("target_type=Task&target_id=1&filename=a.txt&data=aGk=", "data"),
    ]
    for query, field in cases:
        error = await error_of(await raw(service, b"hello", query), 400)
        assert error["field"] == field, (query, error)
    await assert_nothing_stored(service)
    assert all(job.startswith(b"cron:") for job in await service.client.app[REDIS].zrange(QUEUE, 0, -1))


async def test_a_refused_extension_is_refused_by_the_worker(service):
    error = await error_of(await raw(service, b"MZ\x90\x00" * 64, "target_type=Task&target_id=1&filename=a.exe"), 400)
    assert error["code"] == "invalid_extension" and error["field"] == "filename"
    await assert_nothing_stored(service)


async def test_oversized_is_a_413_with_nothing_stored(make_service):
    async with make_service(max_file_bytes=10_000, byte_budget=0) as svc:  # no budget: chunked bodies pass
        # declared too large: refused before a byte is read
        error = await error_of(await raw(svc, b"x" * 10_001, "target_type=Task&target_id=1&filename=big.txt"), 413)
        assert error["code"] == "size_exceeded" and error["field"] == "file"
        assert "big.txt" in error["message"]

        # no Content-Length (chunked): cut off while streaming
        async def chunked():
            for _ in range(11):
                yield b"y" * 1000

        error = await error_of(await raw(svc, chunked(), "target_type=Task&target_id=1&filename=big.txt"), 413)
        assert error["code"] == "size_exceeded" and error["field"] == "file"
        await assert_nothing_stored(svc)
        assert all(job.startswith(b"cron:") for job in await svc.client.app[REDIS].zrange(QUEUE, 0, -1))

        # exactly the limit passes
        resp = await raw(svc, b"z" * 10_000, "target_type=Task&target_id=1&filename=fits.txt")
        assert resp.status == 201, await resp.text()


async def test_the_budget_is_charged_the_content_length(make_service):
    async with make_service(byte_budget=10_000, byte_budget_window_s=60, byte_budget_lockout_s=60) as svc:
        resp = await raw(svc, b"x" * 6_000, "target_type=Task&target_id=1&filename=a.txt")
        assert resp.status == 201, await resp.text()
        # 6,000 + 4,001 do not fit in 10,000
        resp = await raw(svc, b"y" * 4_001, "target_type=Task&target_id=1&filename=b.txt")
        error = await error_of(resp, 429)
        assert error["code"] == "byte_budget_exceeded" and resp.headers["Retry-After"] == "60"
        assert [r["filename"] for r in await svc.rows()] == ["a.txt"]

        # a bad request is refused before it is charged: another account's budget stays whole
        other = svc.other_account()
        resp = await svc.client.post(
            f"{CREATE}?target_type=Task&filename=c.txt",
            data=b"z" * 9_000,
            headers={**svc.auth(other), "Content-Type": "text/plain"},
        )
        assert (await error_of(resp, 400))["field"] == "target_id"
        resp = await svc.client.post(
            f"{CREATE}?target_type=Task&target_id=1&filename=c.txt",
            data=b"z" * 9_000,
            headers={**svc.auth(other), "Content-Type": "text/plain"},
        )
        assert resp.status == 201, await resp.text()

        # with a budget, a body without a Content-Length is refused unread
        async def chunked():
            yield b"hello"

        resp = await svc.client.post(
            f"{CREATE}?target_type=Task&target_id=1&filename=d.txt",
            data=chunked(),
            headers={**svc.auth(svc.other_account()), "Content-Type": "text/plain"},
        )
        assert (await error_of(resp, 411))["code"] == "length_required"
