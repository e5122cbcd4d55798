"""Bad input is refused with a clear 4xx, and leaves no row and no stored bytes."""

from __future__ import annotations

import base64

import aiohttp
import pytest

from tests.conftest import jpeg_bytes


@pytest.fixture
def service(any_backend_service):
    """Every refusal here must leave nothing behind on the S3 backend as well as on the file one."""
    return any_backend_service


def form(name: str, body: bytes, content_type: str = "application/octet-stream") -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("target_type", "Task")
    data.add_field("target_id", "1")
    data.add_field("file", body, filename=name, content_type=content_type)
    return data


async def assert_nothing_stored(svc) -> None:
    assert await svc.rows() == []
    assert await svc.events() == []
    assert await svc.settled_keys() == []


async def error_of(resp, status: int) -> dict:
    assert resp.status == status, await resp.text()
    return (await resp.json())["error"]


async def test_html_named_jpg_is_refused(service):
    html = b"<!DOCTYPE html><html><script>alert(1)</script></html>"
    error = await error_of(
        await service.client.post("/v1/attachments", headers=service.auth(), data=form("cat.jpg", html, "image/jpeg")),
        400,
    )
    assert error["code"] == "content_mismatch"
    assert "text/html" in error["message"]
    await assert_nothing_stored(service)


async def test_disallowed_extension_is_refused(service):
    error = await error_of(
        await service.client.post(
            "/v1/attachments", headers=service.auth(), data=form("setup.exe", b"MZ\x90\x00" * 64)
        ),
        400,
    )
    assert error["code"] == "invalid_extension" and error["field"] == "filename"
    await assert_nothing_stored(service)


async def test_oversized_multipart_file_is_refused_while_streaming(make_service):
    async with make_service(max_file_bytes=10_000) as svc:
        error = await error_of(
            await svc.client.post("/v1/attachments", headers=svc.auth(), data=form("big.jpg", jpeg_bytes(2000, 2000))),
            413,
        )
        assert error["code"] == "size_exceeded" and error["field"] == "file"
        await assert_nothing_stored(svc)


async def test_oversized_base64_is_refused_before_decoding(make_service):
    async with make_service(max_file_bytes=1000) as svc:
        resp = await svc.upload_json(
            {
                "target_type": "Task",
                "target_id": "1",
                "filename": "a.txt",
                "data": base64.b64encode(b"x" * 1001).decode(),
            }
        )
        error = await error_of(resp, 413)
        assert error["code"] == "size_exceeded" and error["field"] == "data"
        await assert_nothing_stored(svc)


async def test_oversized_url_download_is_refused(make_service, remote):
    async with make_service(max_file_bytes=1000) as svc:
        url = remote.add("/big.txt", b"y" * 5000, "text/plain")
        error = await error_of(await svc.upload_json({"target_type": "Task", "target_id": "1", "url": url}), 413)
        assert error["code"] == "size_exceeded" and error["field"] == "url"
        await assert_nothing_stored(svc)


@pytest.mark.parametrize("data", ["not base64 at all!", "aGVsbG8", "aGVs bG8=", "data:text/plain;base64,@@@@"])
async def test_invalid_base64_is_refused(service, data):
    error = await error_of(
        await service.upload_json({"target_type": "Task", "target_id": "1", "filename": "a.txt", "data": data}), 400
    )
    assert error["code"] == "invalid_base64" and error["field"] == "data"
    await assert_nothing_stored(service)


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "0.0.0.0", "2130706433", "localhost"])
async def test_urls_to_loopback_are_refused_by_default(make_service, remote, host):
    remote.add("/secret.txt", b"internal only", "text/plain")
    async with make_service(fetch_allow_cidrs="") as svc:
        url = f"http://{host}:{remote.server.port}/secret.txt"
        error = await error_of(await svc.upload_json({"target_type": "Task", "target_id": "1", "url": url}), 400)
        assert error["code"] == "url_refused" and error["field"] == "url"
        assert remote.hits == []
        await assert_nothing_stored(svc)


async def test_redirect_to_a_refused_address_is_refused(make_service, remote, aiohttp_server):
    """The allowed server (127.0.0.1) redirects to 127.0.0.2, which the policy refuses."""
    remote.add("/inner.txt", b"internal", "text/plain")
    target = f"http://127.0.0.2:{remote.server.port}/inner.txt"
    start = remote.add("/start", b"", headers={"Location": target})
    async with make_service(fetch_allow_cidrs="127.0.0.1/32") as svc:
        error = await error_of(await svc.upload_json({"target_type": "Task", "target_id": "1", "url": start}), 400)
        assert error["code"] == "url_refused" and error["field"] == "url"
        assert remote.hits == ["/start"]
        await assert_nothing_stored(svc)


async def test_image_over_the_pixel_limit_is_refused(make_service):
    async with make_service(max_image_pixels=100_000) as svc:
        error = await error_of(
            await svc.client.post("/v1/attachments", headers=svc.auth(), data=form("huge.jpg", jpeg_bytes(1000, 1000))),
            422,
        )
        assert error["code"] == "image_too_large"
        await assert_nothing_stored(svc)


async def test_truncated_jpeg_is_refused(service):
    photo = jpeg_bytes(800, 600)
    error = await error_of(
        await service.client.post(
            "/v1/attachments", headers=service.auth(), data=form("cut.jpg", photo[: len(photo) // 2])
        ),
        422,
    )
    assert error["code"] == "invalid_image"
    await assert_nothing_stored(service)


async def test_body_that_is_not_json_is_a_400(service):
    resp = await service.client.post(
        "/v1/attachments", data=b"{not json", headers={**service.auth(), "Content-Type": "application/json"}
    )
    error = await error_of(resp, 400)
    assert error["code"] == "invalid_json"


async def test_unknown_route_and_method_use_the_error_shape(service):
    error = await error_of(await service.client.get("/v2/nothing"), 404)
    assert error["code"] == "not_found"
    resp = await service.client.put("/v1/attachments", headers=service.auth())
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_a_declared_size_over_the_limit_is_refused(make_service):
    async with make_service(max_file_bytes=1000) as svc:
        small = base64.b64encode(b"tiny text").decode()
        error = await error_of(
            await svc.upload_json(
                {"target_type": "Task", "target_id": "1", "filename": "a.txt", "size": 1001, "data": small}
            ),
            413,
        )
        assert error["code"] == "size_exceeded" and error["field"] == "size"
        await assert_nothing_stored(svc)


def test_url_fetches_are_refused_for_every_private_address_by_default():
    from services.core.settings import load_settings

    assert load_settings({}).fetch_allow_cidrs == ()
