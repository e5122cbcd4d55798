"""The query service: list, order, page, count, get, and downloads with Range, ETag and safe headers."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.conftest import jpeg_bytes
from tests.test_uploads import path_of


async def upload_text(
    svc, name: str, *, target_id: str = "1", display_order: int = 0, body: bytes | None = None
) -> dict:
    resp = await svc.upload_json(
        {
            "target_type": "Task",
            "target_id": target_id,
            "filename": name,
            "display_order": display_order,
            "data": base64.b64encode(body or name.encode()).decode(),
        }
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def list_ids(svc, query: str) -> tuple[list[str], str | None]:
    resp = await svc.client.get(f"/v1/attachments?{query}", headers=svc.auth())
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return [a["filename"] for a in body["attachments"]], body["next_cursor"]


async def test_list_by_target_with_order_by_and_cursor_pages(service):
    for name, order in (("c.txt", 2), ("a.txt", 1), ("b.txt", 1), ("d.txt", 0)):
        await upload_text(service, name, display_order=order)
    await upload_text(service, "elsewhere.txt", target_id="2")

    names, cursor = await list_ids(service, "target_type=Task&target_id=1")
    assert names == ["d.txt", "a.txt", "b.txt", "c.txt"] and cursor is None

    names, _ = await list_ids(service, "target_type=Task&target_id=1&order_by=-display_order,name")
    assert names == ["c.txt", "a.txt", "b.txt", "d.txt"]

    seen, cursor = [], None
    while True:
        page, cursor = await list_ids(
            service, "target_type=Task&target_id=1&order_by=-name&limit=3" + (f"&cursor={cursor}" if cursor else "")
        )
        seen += page
        if cursor is None:
            break
    assert seen == ["d.txt", "c.txt", "b.txt", "a.txt"]


async def test_count_and_canceled_rows_are_hidden_unless_asked(service):
    keep = await upload_text(service, "keep.txt")
    gone = await upload_text(service, "gone.txt")
    assert (await service.client.delete(f"/v1/attachments/{gone['id']}", headers=service.auth())).status == 204

    count = await (
        await service.client.get("/v1/attachments/count?target_type=Task&target_id=1", headers=service.auth())
    ).json()
    assert count == {"count": 1}
    names, _ = await list_ids(service, "target_type=Task&target_id=1")
    assert names == ["keep.txt"]
    names, _ = await list_ids(service, "target_type=Task&target_id=1&include_canceled=true&order_by=name")
    assert names == ["gone.txt", "keep.txt"]

    assert (await service.client.get(f"/v1/attachments/{gone['id']}", headers=service.auth())).status == 404
    shown = await service.client.get(f"/v1/attachments/{gone['id']}?include_canceled=true", headers=service.auth())
    assert (await shown.json())["canceled_at"] is not None
    got = await (await service.client.get(f"/v1/attachments/{keep['id']}", headers=service.auth())).json()
    assert got["id"] == keep["id"] and got["canceled_at"] is None


async def test_bad_list_parameters_are_400s_naming_them(service):
    for query, field in (
        ("order_by=password", "order_by"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("cursor=garbage", "cursor"),
        ("colour=red", "colour"),
        ("target_id=1", "target_type"),
    ):
        resp = await service.client.get(f"/v1/attachments?{query}", headers=service.auth())
        assert resp.status == 400, query
        assert (await resp.json())["error"]["field"] == field


async def test_download_headers_range_and_etag(service):
    record = await upload_text(service, "notes.txt", body=b"0123456789" * 100)
    url = f"/v1/attachments/{record['id']}/file"

    full = await service.client.get(url, headers=service.auth())
    assert full.status == 200
    assert full.headers["X-Content-Type-Options"] == "nosniff"
    assert full.headers["Content-Disposition"].startswith("attachment;")
    assert 'filename="notes.txt"' in full.headers["Content-Disposition"]
    assert "sandbox" in full.headers["Content-Security-Policy"]
    etag = full.headers["ETag"]
    assert etag == f'"{hashlib.sha256(b"0123456789" * 100).hexdigest()}"'

    part = await service.client.get(url, headers={**service.auth(), "Range": "bytes=10-19"})
    assert part.status == 206
    assert await part.read() == b"0123456789"
    assert part.headers["Content-Range"] == "bytes 10-19/1000"

    tail = await service.client.get(url, headers={**service.auth(), "Range": "bytes=-5"})
    assert await tail.read() == b"56789"

    bad = await service.client.get(url, headers={**service.auth(), "Range": "bytes=5000-"})
    assert bad.status == 416
    assert bad.headers["Content-Range"] == "bytes */1000"

    cached = await service.client.get(url, headers={**service.auth(), "If-None-Match": etag})
    assert cached.status == 304


async def test_images_are_inline_and_everything_else_is_an_attachment(service):
    photo = jpeg_bytes(400, 300)
    resp = await service.upload_json(
        {
            "target_type": "Task",
            "target_id": "1",
            "filename": "Résumé photo.jpg",
            "data": base64.b64encode(photo).decode(),
        }
    )
    record = await resp.json()
    original = await service.client.get(path_of(record["file"]["original"]))
    disposition = original.headers["Content-Disposition"]
    assert disposition.startswith("inline;")
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9%20photo.jpg" in disposition
    forced = await service.client.get(path_of(record["file"]["original"]) + "&download=1")
    assert forced.headers["Content-Disposition"].startswith("attachment;")


async def test_a_link_without_bytes_has_no_file_to_download(service):
    resp = await service.upload_json(
        {"target_type": "Task", "target_id": "1", "attachment_type": "URL", "url": "https://example.com/"}
    )
    record = await resp.json()
    dl = await service.client.get(f"/v1/attachments/{record['id']}/file", headers=service.auth())
    assert dl.status == 404
    assert (await dl.json())["error"]["code"] == "no_file"


@pytest.mark.parametrize("active", ["text/html", "image/svg+xml", "application/xml", "text/xml; charset=utf-8"])
async def test_active_content_is_never_served_as_itself(service, active):
    """The upload side refuses HTML, SVG and XML; a row that says so anyway (an old row, an import, a
    bug) is still served as bytes to save, never as a page."""
    record = await upload_text(service, "page.txt", body=b"plain words, stored as text")
    await service.pool.execute("UPDATE attachments SET content_type = $2 WHERE id = $1::uuid", record["id"], active)

    for url in (f"/v1/attachments/{record['id']}/file", path_of(record["file"]["original"])):
        resp = await service.client.get(url, headers=service.auth())
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Content-Disposition"].startswith("attachment;")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_range_download_on_both_backends(any_backend_service):
    svc = any_backend_service
    record = await upload_text(svc, "notes.txt", body=b"".join(b"line %04d\n" % i for i in range(1024)))
    part = await svc.client.get(
        f"/v1/attachments/{record['id']}/file", headers={**svc.auth(), "Range": "bytes=100-119"}
    )
    assert part.status == 206
    assert await part.read() == b"line 0010\nline 0011\n"
    assert part.headers["Content-Range"] == "bytes 100-119/10240"


async def test_available_false_lists_and_counts_the_hidden_ones(service):
    for name, available in (("shown.txt", True), ("hidden.txt", False)):
        resp = await service.upload_json(
            {"target_type": "Task", "target_id": "1", "filename": name, "data": "eA==", "available": available}
        )
        assert resp.status == 201, await resp.text()
    for query, expected in (("", ["hidden.txt", "shown.txt"]), ("&available=true", ["shown.txt"])):
        assert (await list_ids(service, f"target_type=Task&target_id=1&order_by=name{query}"))[0] == expected
    assert (await list_ids(service, "target_type=Task&target_id=1&available=false"))[0] == ["hidden.txt"]
    assert (await list_ids(service, "available=0"))[0] == ["hidden.txt"]
    count = await service.client.get("/v1/attachments/count?available=false", headers=service.auth())
    assert await count.json() == {"count": 1}
    bad = await service.client.get("/v1/attachments?available=maybe", headers=service.auth())
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "available"


@pytest.mark.parametrize(
    "query, field",
    [
        ("order_by=name&order_by=-created_at", "order_by"),
        ("available=false&available=true", "available"),
        ("target_type=Task&target_id=1&target_id=2", "target_id"),
    ],
)
async def test_a_repeated_parameter_is_refused_not_half_read(service, query, field):
    for path in ("/v1/attachments", "/v1/attachments/count"):
        resp = await service.client.get(f"{path}?{query}", headers=service.auth())
        assert resp.status == 400, path
        assert (await resp.json())["error"] == {
            "code": "duplicate_parameter",
            "message": f"{field} is given more than once",
            "field": field,
        }
