"""The bookingsync profile: every example request of the seed document (000_c63b6c4e4b34ef3d.txt) as written,
with only the base URL and the credential replaced, answered in the documented shapes; plus the profile's
rules (one source, line-wrapped base64, targets, creators, the integer account, thumbnails, soft delete,
tenancy, the list parameters of BookingSync API v3) and its pure translations."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid
from typing import Any

import orjson
import pytest
import pyvips
from yarl import URL

from services.compat.bookingsync import answers, errors, inputs
from services.core.auth import READ, Principal
from services.core.contract import ItemError
from services.core.errors import ApiError
from tests.conftest import Service, jpeg_bytes, png_bytes

BASE = "/compat/bookingsync/api/v3/task_management/attachments"
TASK_ID = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"

# The seed's response.json (list, get and create answer the same document), verbatim.
DOCUMENTED = {
    "links": {
        "attachments.account": "https://www.bookingsync.com/api/v3/accounts/{attachments.account}",
        "attachments.task": "https://www.bookingsync.com/api/v3/task_management/tasks/{attachments.target.id}",
        "attachments.task_comment": (
            "https://www.bookingsync.com/api/v3/task_management/task_comments/{attachments.target.id}"
        ),
        "attachments.template": "https://www.bookingsync.com/api/v3/task_management/templates/{attachments.target.id}",
        "attachments.user": "https://www.bookingsync.com/api/v3/users/{attachments.created_by.id}",
        "attachments.application": "https://www.bookingsync.com/api/v3/applications/{attachments.created_by.id}",
    },
    "attachments": [
        {
            "links": {
                "account": 1,
                "target": {"id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "type": "TaskManagement::Task"},
                "created_by": {"id": 5, "type": "User"},
            },
            "id": "e5f6a7b8-c9d0-1234-efgh-567890123456",
            "file": {
                "thumbnail": "https://storage.example.com/attachments/e5f6a7b8/thumbnail.jpg",
                "small": "https://storage.example.com/attachments/e5f6a7b8/small.jpg",
                "original": "https://storage.example.com/attachments/e5f6a7b8/original.jpg",
            },
            "created_at": "2024-01-15T11:00:00Z",
            "updated_at": "2024-01-15T11:00:00Z",
            "canceled_at": None,
        }
    ],
    "meta": {},
}
# The seed's request.json of "Create a new Attachment", verbatim; its URL is served on 127.0.0.1 by the test.
DOCUMENTED_CREATE = {
    "attachments": [
        {
            "target_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
            "target_type": "TaskManagement::Task",
            "remote_file_url": "https://example.com/images/photo.jpg",
        }
    ]
}
# Documented as Time / String but null by the document's own words: canceled_at until canceled, the two
# variants for files that are not transformable images.
NULLABLE = {"canceled_at", "thumbnail", "small"}


def assert_documented_shape(actual: Any, documented: Any, key: str = "") -> None:
    """The same keys at every level, each value of the documented JSON type (null where the doc allows)."""
    if isinstance(documented, dict):
        assert isinstance(actual, dict) and set(actual) == set(documented), (key, actual)
        for name, value in documented.items():
            assert_documented_shape(actual[name], value, name)
    elif isinstance(documented, list):
        assert isinstance(actual, list), (key, actual)
        for item in actual:
            assert_documented_shape(item, documented[0], key)
    elif documented is None or (key in NULLABLE and actual is None):
        assert actual is None or isinstance(actual, str), (key, actual)
    else:
        assert type(actual) is type(documented), (key, actual)


def ruby_encode64(data: bytes) -> str:
    """What Ruby's ``Base64.encode64`` writes: 60-character lines, each ending in a newline."""
    flat = base64.b64encode(data).decode()
    return "".join(flat[i : i + 60] + "\n" for i in range(0, len(flat), 60))


def account_number() -> str:
    return str(uuid.uuid4().int % 10**9 + 1)


def auth(service: Service, account: str, **kw: Any) -> dict[str, str]:
    return service.auth(account, sub=kw.pop("sub", "5"), **kw)


def path_of(link: str) -> str:
    return URL(link).path_qs


async def body_of(resp) -> Any:
    return await resp.json(content_type=None)


async def create(service: Service, account: str, item: dict[str, Any], **kw: Any):
    return await service.client.post(BASE, json={"attachments": [item]}, headers=auth(service, account, **kw))


async def image_size(service: Service, link: str) -> tuple[int, int]:
    resp = await service.client.get(path_of(link))
    assert resp.status == 200
    image = pyvips.Image.new_from_buffer(await resp.read(), "")
    return image.width, image.height


# -- the seed's example requests, as written ---------------------------------------------------------------


async def test_documented_requests_in_order(service, remote):
    """Create (the documented request.json), list, get, delete: each answer in the documented shape."""
    photo = jpeg_bytes(1200, 800)
    remote.add("/images/photo.jpg", photo, "image/jpeg")
    item = dict(DOCUMENTED_CREATE["attachments"][0], remote_file_url=remote.url("/images/photo.jpg"))
    account = account_number()

    created = await service.client.post(
        BASE,
        data=orjson.dumps({"attachments": [item]}),
        headers={**auth(service, account), "Content-Type": "application/vnd.api+json"},
    )
    assert created.status == 201, await created.text()
    assert created.content_type == "application/vnd.api+json"
    body = await body_of(created)
    assert_documented_shape(body, DOCUMENTED)
    assert body["links"] == DOCUMENTED["links"] and body["meta"] == {}
    [record] = body["attachments"]
    assert record["links"] == {
        "account": int(account),
        "target": {"id": TASK_ID, "type": "TaskManagement::Task"},
        "created_by": {"id": 5, "type": "User"},
    }
    assert record["canceled_at"] is None
    assert dt.datetime.strptime(record["created_at"], "%Y-%m-%dT%H:%M:%SZ")
    # The file's three links really download: the bytes fetched, and the two documented variant sizes.
    original = await service.client.get(path_of(record["file"]["original"]))
    assert original.status == 200 and await original.read() == photo
    assert await image_size(service, record["file"]["thumbnail"]) == (72, 48)
    assert await image_size(service, record["file"]["small"]) == (161, 107)
    [row] = await service.rows(account)
    assert (str(row["id"]), row["target_type"], row["target_id"]) == (record["id"], "TaskManagement::Task", TASK_ID)

    listed = await service.client.get(BASE, headers=auth(service, account))
    assert listed.status == 200
    body = await body_of(listed)
    assert_documented_shape(body, DOCUMENTED)
    assert body["meta"] == {} and [a["id"] for a in body["attachments"]] == [record["id"]]

    got = await service.client.get(f"{BASE}/{record['id']}", headers=auth(service, account))
    assert got.status == 200
    body = await body_of(got)
    assert_documented_shape(body, DOCUMENTED)
    assert body["attachments"][0]["id"] == record["id"] and body["attachments"][0]["links"] == record["links"]

    deleted = await service.client.delete(f"{BASE}/{record['id']}", headers=auth(service, account))
    assert deleted.status == 204 and await deleted.read() == b""
    [row] = await service.rows(account)
    assert row["canceled_at"] is not None
    assert (await service.client.get(f"{BASE}/{record['id']}", headers=auth(service, account))).status == 404
    body = await body_of(await service.client.get(BASE, headers=auth(service, account)))
    assert body["attachments"] == []
    again = await service.client.delete(f"{BASE}/{record['id']}", headers=auth(service, account))
    assert again.status == 404 and await body_of(again) == {"error": "attachment not found"}


# -- create ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target_type", answers.TARGET_TYPES)
async def test_ruby_line_wrapped_base64_round_trips_on_each_target_type(service, target_type):
    picture = png_bytes(640, 480)
    target = str(uuid.uuid4())
    account = account_number()
    item = {"target_id": target, "target_type": target_type, "remote_file": ruby_encode64(picture)}
    assert "\n" in item["remote_file"]
    resp = await create(service, account, item, sub="77", sub_type="Application")
    assert resp.status == 201, await resp.text()
    [record] = (await body_of(resp))["attachments"]
    assert record["links"]["target"] == {"id": target, "type": target_type}
    assert record["links"]["created_by"] == {"id": 77, "type": "Application"}
    fetched = await service.client.get(path_of(record["file"]["original"]))
    assert await fetched.read() == picture
    assert await image_size(service, record["file"]["thumbnail"]) == (72, 48)
    assert await image_size(service, record["file"]["small"]) == (161, 107)


async def test_a_file_that_is_not_an_image_has_no_variants(service):
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    account = account_number()
    item = {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file": ruby_encode64(pdf)}
    resp = await create(service, account, item)
    assert resp.status == 201, await resp.text()
    body = await body_of(resp)
    assert_documented_shape(body, DOCUMENTED)
    file = body["attachments"][0]["file"]
    assert file["thumbnail"] is None and file["small"] is None
    assert await (await service.client.get(path_of(file["original"]))).read() == pdf


async def assert_refused(service: Service, account: str, resp, errors: dict[str, Any]) -> None:
    assert resp.status == 422, await resp.text()
    body = await body_of(resp)
    assert set(body) == {"errors"} and set(body["errors"]) == set(errors), body
    for texts in body["errors"].values():
        assert isinstance(texts, list) and all(isinstance(t, str) and t for t in texts)
    assert await service.rows(account) == []
    assert [k for k in await service.stored_keys() if not k.startswith("staging/")] == []


async def test_exactly_one_source(service, remote):
    account = account_number()
    url = remote.add("/a.jpg", jpeg_bytes(), "image/jpeg")
    task = {"target_id": TASK_ID, "target_type": "TaskManagement::Task"}
    both = {**task, "remote_file": "aGVsbG8=", "remote_file_url": url}
    await assert_refused(service, account, await create(service, account, both), {"remote_file": ...})
    neither = {**task, "remote_file": "", "remote_file_url": None}
    await assert_refused(service, account, await create(service, account, neither), {"remote_file": ...})
    assert remote.hits == []


async def test_bad_fields_are_named_together_and_nothing_is_stored(service):
    account = account_number()
    item = {"target_id": "42", "target_type": "TaskManagement::Booking", "remote_file_url": "https://x.test/a.jpg"}
    await assert_refused(service, account, await create(service, account, item), {"target_id": ..., "target_type": ...})
    item = {"target_type": "Task", "remote_file": "aGVsbG8="}
    await assert_refused(service, account, await create(service, account, item), {"target_id": ..., "target_type": ...})
    for body in ({}, {"attachments": []}, {"attachments": {"target_id": TASK_ID}}, {"attachments": ["x"]}):
        resp = await service.client.post(BASE, json=body, headers=auth(service, account))
        await assert_refused(service, account, resp, {"attachments": ...})


async def test_bytes_the_worker_refuses_name_the_source_field(service, remote):
    account = account_number()
    item = {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file": "not base64 at all!"}
    await assert_refused(service, account, await create(service, account, item), {"remote_file": ...})
    item = {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file_url": remote.url("/missing.jpg")}
    await assert_refused(service, account, await create(service, account, item), {"remote_file_url": ...})
    html = ruby_encode64(b"<html><script>alert(1)</script></html>")
    item = {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file": html}
    await assert_refused(service, account, await create(service, account, item), {"remote_file": ...})


async def test_a_file_over_the_limit_names_its_source(make_service, remote):
    async with make_service(max_file_bytes=1000) as service:
        account = account_number()
        big = jpeg_bytes(400, 300)
        assert len(big) > 1000
        item = {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file": ruby_encode64(big)}
        await assert_refused(service, account, await create(service, account, item), {"remote_file": ...})
        url = remote.add("/big.jpg", big, "image/jpeg")
        item = {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file_url": url}
        await assert_refused(service, account, await create(service, account, item), {"remote_file_url": ...})


async def test_invalid_json_is_a_400_and_a_foreign_media_type_a_415(service):
    account = account_number()
    headers = {**auth(service, account), "Content-Type": "application/json"}
    resp = await service.client.post(BASE, data=b"{not json", headers=headers)
    assert resp.status == 400 and set(await body_of(resp)) == {"error"}
    headers["Content-Type"] = "text/plain"
    resp = await service.client.post(BASE, data=b"{}", headers=headers)
    assert resp.status == 415 and set(await body_of(resp)) == {"error"}
    assert await service.rows(account) == []


async def test_many_attachments_in_one_request_are_all_or_nothing(service):
    account = account_number()
    good = {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file": ruby_encode64(png_bytes())}
    bad = {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file": ruby_encode64(b"<html></html>")}
    resp = await service.client.post(BASE, json={"attachments": [good, bad]}, headers=auth(service, account))
    await assert_refused(service, account, resp, {"attachments[1].remote_file": ...})
    resp = await service.client.post(BASE, json={"attachments": [good, good]}, headers=auth(service, account))
    assert resp.status == 201
    body = await body_of(resp)
    assert_documented_shape(body, DOCUMENTED)
    assert len(body["attachments"]) == 2 and len(await service.rows(account)) == 2


async def test_a_create_asked_to_answer_at_once_is_accepted_and_readable_once_done(service):
    account = account_number()
    item = {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file": ruby_encode64(png_bytes())}
    resp = await service.client.post(
        BASE, json={"attachments": [item]}, headers={**auth(service, account), "Prefer": "respond-async"}
    )
    assert resp.status == 202, await resp.text()
    body = await body_of(resp)
    assert body["attachments"] == [] and body["links"] == DOCUMENTED["links"]
    assert set(body["meta"]) == {"id", "status_url"}
    for _ in range(200):  # the native status URL, polled as an async client would
        status = await (await service.client.get(body["meta"]["status_url"], headers=auth(service, account))).json()
        if status["status"] == "complete":
            break
        await asyncio.sleep(0.05)
    assert status["status"] == "complete"
    got = await service.client.get(f"{BASE}/{body['meta']['id']}", headers=auth(service, account))
    assert got.status == 200
    assert_documented_shape(await body_of(got), DOCUMENTED)


# -- credentials and tenancy -----------------------------------------------------------------------------


async def test_credentials_scopes_and_accounts(service):
    account = account_number()
    item = {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file": ruby_encode64(png_bytes())}
    resp = await service.client.get(BASE)
    assert resp.status == 401 and set(await body_of(resp)) == {"error"}
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await service.client.get(BASE, headers={"Authorization": "Bearer nonsense"})
    assert resp.status == 401 and set(await body_of(resp)) == {"error"}
    reader = auth(service, account, scope="task_management_read")
    assert (await service.client.get(BASE, headers=reader)).status == 200
    resp = await service.client.post(BASE, json={"attachments": [item]}, headers=reader)
    assert resp.status == 403 and set(await body_of(resp)) == {"error"}
    writer = auth(service, account, scope="task_management_write")
    assert (await service.client.post(BASE, json={"attachments": [item]}, headers=writer)).status == 201
    # A tenant whose account id is not a number cannot be shown as BookingSync's integer account.
    resp = await service.client.post(BASE, json={"attachments": [item]}, headers=service.auth())
    assert resp.status == 403 and "numeric" in (await body_of(resp))["error"]
    assert await service.rows() == []


async def test_an_api_key_made_for_the_profile_with_its_account_bound(service, attachd_keys):
    """`attachd keys create --profile bookingsync --bind account=<n>`: a tenant whose id is not a number shows
    as account n; the key works here only, and a revoked key is refused at once."""
    scopes = "task_management_read task_management_write"
    options = ("--scope", scopes, "--profile", "bookingsync", "--bind", "account=4321", "--actor-type", "User")
    lines = await attachd_keys("create", "--account", service.account, *options, "--actor-id", "5")
    key = {"Authorization": f"Bearer {lines[-1]}"}
    item = {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file": ruby_encode64(png_bytes())}
    resp = await service.client.post(BASE, json={"attachments": [item]}, headers=key)
    assert resp.status == 201, await resp.text()
    [record] = (await body_of(resp))["attachments"]
    assert record["links"]["account"] == 4321
    assert record["links"]["created_by"] == {"id": 5, "type": "User"}
    [row] = await service.rows()  # stored under the key's tenant
    assert (str(row["id"]), row["created_by_type"], row["created_by_id"]) == (record["id"], "User", "5")
    listed = await body_of(await service.client.get(BASE, headers=key))
    assert [a["id"] for a in listed["attachments"]] == [record["id"]]
    assert (await service.client.get(f"/v1/attachments/{record['id']}", headers=key)).status == 401

    reader_key = await attachd_keys("create", "--account", account_number(), "--scope", "task_management_read")
    reader = {"Authorization": f"Bearer {reader_key[-1]}"}
    assert (await service.client.get(BASE, headers=reader)).status == 200
    resp = await service.client.post(BASE, json={"attachments": [item]}, headers=reader)
    assert resp.status == 403 and set(await body_of(resp)) == {"error"}

    [listed_key] = orjson.loads("\n".join(await attachd_keys("list", "--account", service.account, "--json")))
    await attachd_keys("revoke", str(listed_key["id"]))
    resp = await service.client.get(BASE, headers=key)
    assert resp.status == 401 and "revoked" in (await body_of(resp))["error"]


async def test_another_tenants_attachment_is_a_404(service):
    mine, theirs = account_number(), account_number()
    item = {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file": ruby_encode64(png_bytes())}
    record = (await body_of(await create(service, theirs, item)))["attachments"][0]
    for method in ("GET", "DELETE"):
        resp = await service.client.request(method, f"{BASE}/{record['id']}", headers=auth(service, mine))
        assert resp.status == 404 and await body_of(resp) == {"error": "attachment not found"}
    assert (await body_of(await service.client.get(BASE, headers=auth(service, mine))))["attachments"] == []
    [row] = await service.rows(theirs)
    assert row["canceled_at"] is None
    for odd in ("not-a-uuid", "1", str(uuid.uuid4())):
        assert (await service.client.get(f"{BASE}/{odd}", headers=auth(service, mine))).status == 404
        assert (await service.client.delete(f"{BASE}/{odd}", headers=auth(service, mine))).status == 404


async def test_attachments_of_other_targets_are_not_this_resource(service):
    account = account_number()
    native = await service.client.post(
        "/v1/attachments",
        json={"target_type": "Ticket", "target_id": "42", "data": base64.b64encode(png_bytes()).decode()},
        headers=auth(service, account),
    )
    assert native.status == 201
    ident = (await native.json())["id"]
    assert (await body_of(await service.client.get(BASE, headers=auth(service, account))))["attachments"] == []
    assert (await service.client.get(f"{BASE}/{ident}", headers=auth(service, account))).status == 404
    assert (await service.client.delete(f"{BASE}/{ident}", headers=auth(service, account))).status == 404
    [row] = await service.rows(account)
    assert row["canceled_at"] is None


# -- list parameters (BookingSync API v3 conventions) ----------------------------------------------------


async def make_many(service: Service, account: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        item = {"target_id": str(uuid.uuid4()), "target_type": "TaskManagement::TaskComment", "remote_file": "aGk="}
        resp = await create(service, account, item)
        assert resp.status == 201, await resp.text()
        ids.append((await body_of(resp))["attachments"][0]["id"])
    return ids


async def test_pages_ids_and_fields(service):
    account = account_number()
    ids = await make_many(service, account, 5)
    headers = auth(service, account)
    resp = await service.client.get(BASE, params={"per_page": "2", "page": "2"}, headers=headers)
    assert resp.status == 200
    body = await body_of(resp)
    assert [a["id"] for a in body["attachments"]] == ids[2:4]
    assert resp.headers["X-Total-Count"] == "5" and resp.headers["X-Total-Pages"] == "3"
    assert resp.headers["X-Per-Page"] == "2"
    rels = {
        part.split('rel="')[1].rstrip('"'): URL(part.split(">")[0].lstrip(" <"))
        for part in resp.headers["Link"].split(",")
    }
    assert set(rels) == {"first", "prev", "next", "last"}
    assert rels["next"].query["page"] == "3" and rels["last"].query["page"] == "3"
    following = await body_of(await service.client.get(rels["next"].path_qs, headers=headers))
    assert [a["id"] for a in following["attachments"]] == ids[4:]
    assert (await body_of(await service.client.get(BASE, params={"page": "9"}, headers=headers)))["attachments"] == []

    two = await service.client.get(f"{BASE}/{ids[3]},{ids[1]}", headers=headers)
    assert two.status == 200
    assert sorted(a["id"] for a in (await body_of(two))["attachments"]) == sorted([ids[1], ids[3]])

    slim = await body_of(await service.client.get(BASE, params={"fields": "id,file"}, headers=headers))
    assert all(set(a) == {"links", "id", "file"} for a in slim["attachments"])

    for bad in ({"per_page": "0"}, {"page": "x"}, {"updated_since": "yesterday"}):
        resp = await service.client.get(BASE, params=bad, headers=headers)
        assert resp.status == 422 and set((await body_of(resp))["errors"]) == set(bad)


async def test_updated_since_lists_changes_and_deleted_ids(service):
    account = account_number()
    headers = auth(service, account)
    old, gone = await make_many(service, account, 2)
    await asyncio.sleep(1.05)  # the synced-at time is to the second, and a sync asks from that second on
    first = await service.client.get(BASE, headers=headers)
    synced = first.headers["X-Updated-Since-Request-Synced-At"]
    assert synced.endswith(" UTC")
    [new] = await make_many(service, account, 1)
    assert (await service.client.delete(f"{BASE}/{gone}", headers=headers)).status == 204
    resp = await service.client.get(BASE, params={"updated_since": synced}, headers=headers)
    assert resp.status == 200
    body = await body_of(resp)
    assert [a["id"] for a in body["attachments"]] == [new]
    assert body["meta"] == {"deleted_ids": [gone]}
    assert old not in body["meta"]["deleted_ids"]


# -- pure translations -----------------------------------------------------------------------------------


def test_unwrap_base64_takes_ruby_and_mime_line_breaks():
    data = bytes(range(256)) * 3
    assert base64.b64decode(inputs.unwrap_base64(ruby_encode64(data)), validate=True) == data
    assert base64.b64decode(inputs.unwrap_base64(base64.encodebytes(data).decode()), validate=True) == data
    assert inputs.unwrap_base64("aGVs\r\nbG8=\n") == "aGVsbG8="


def test_native_create_translates_one_and_many():
    one = {"target_id": TASK_ID.upper(), "target_type": "TaskManagement::Template", "remote_file": "aGVs\nbG8=\n"}
    assert inputs.native_create({"attachments": [dict(one, id="ignored", account=3)]}) == {
        "target_type": "TaskManagement::Template",
        "target_id": TASK_ID,
        "data": "aGVsbG8=",
    }
    url = {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file_url": " https://x.test/a.png "}
    assert inputs.native_create({"attachments": [one, url]}) == {
        "attachments": [
            {"target_type": "TaskManagement::Template", "target_id": TASK_ID, "data": "aGVsbG8="},
            {"target_type": "TaskManagement::Task", "target_id": TASK_ID, "url": "https://x.test/a.png"},
        ],
        "mode": "atomic",
    }
    with pytest.raises(ApiError) as caught:
        inputs.native_create({"attachments": [one, {"target_type": "TaskManagement::Task"}]})
    assert set(caught.value.extra["errors"]) == {"attachments[1].target_id", "attachments[1].remote_file"}


@pytest.mark.parametrize(
    ("item", "fields"),
    [
        ({"target_id": TASK_ID, "target_type": "TaskManagement::Task"}, {"remote_file"}),
        ({"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file": "  "}, {"remote_file"}),
        (
            {"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file": "a", "remote_file_url": "u"},
            {"remote_file"},
        ),
        ({"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file": 12}, {"remote_file"}),
        ({"target_id": TASK_ID, "target_type": "TaskManagement::Task", "remote_file_url": ["u"]}, {"remote_file_url"}),
        ({"target_id": 7, "target_type": "Task", "remote_file": "a"}, {"target_id", "target_type"}),
        ({"remote_file": "a"}, {"target_id", "target_type"}),
    ],
)
def test_native_item_refusals_name_every_field(item, fields):
    with pytest.raises(ApiError) as caught:
        inputs.native_item(item)
    assert caught.value.status == 422 and set(caught.value.extra["errors"]) == fields
    assert errors.error_body(caught.value)[0] == 422


def test_create_refusals_name_what_the_client_sent():
    one = {"target_type": "TaskManagement::Task", "target_id": TASK_ID, "url": "https://x.test/a"}
    refused = errors.create_refusal(ApiError("forbidden_extension", "no extension", field="filename"), [], one)
    assert errors.error_body(refused) == (422, {"errors": {"remote_file_url": ["no extension"]}})
    many = {"attachments": [{"data": "aGk="}, {"url": "https://x.test/a"}], "mode": "atomic"}
    item_errors = [
        ItemError(index=1, code="fetch_failed", message="404 at the URL", status=422, field="url"),
        ItemError(index=0, code="mismatch", message="not a png", status=415, field="content_type"),
    ]
    summary = ApiError("upload_refused", "1 of 2 files were refused", status=400)
    assert errors.error_body(errors.create_refusal(summary, item_errors, many)) == (
        422,
        {"errors": {"attachments[1].remote_file_url": ["404 at the URL"], "attachments[0].remote_file": ["not a png"]}},
    )
    throttled = ApiError("rate_limited", "slow down", status=429, field="data")
    assert errors.create_refusal(throttled, [], one) is throttled


def test_error_bodies():
    assert errors.error_body(ApiError("invalid_base64", "data is not base64", field="data")) == (
        422,
        {"errors": {"remote_file": ["data is not base64"]}},
    )
    assert errors.error_body(ApiError("x", "bad url", field="attachments[1].url", status=413)) == (
        422,
        {"errors": {"attachments[1].remote_file_url": ["bad url"]}},
    )
    assert errors.error_body(ApiError("unauthorized", "the token has expired", status=401)) == (
        401,
        {"error": "the token has expired"},
    )
    assert errors.error_body(ApiError("not_found", "attachment not found", status=404)) == (
        404,
        {"error": "attachment not found"},
    )
    assert errors.error_body(errors.invalid({"target_id": ["can't be blank"]})) == (
        422,
        {"errors": {"target_id": ["can't be blank"]}},
    )


def test_attachment_from_a_native_record():
    record = {
        "id": uuid.UUID("0190d0a0-0000-7000-8000-000000000001"),
        "target_type": "TaskManagement::TaskComment",
        "target_id": TASK_ID,
        "created_by": {"type": "User", "id": "5"},
        "file": {"original": "https://h/o", "thumbnail": None, "small": None},
        "created_at": dt.datetime(2024, 1, 15, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        "updated_at": "2024-01-15T11:00:00.5Z",
        "canceled_at": None,
        "name": "not part of the shape",
    }
    shaped = answers.attachment(record, 1)
    assert shaped == {
        "links": {
            "account": 1,
            "target": {"id": TASK_ID, "type": "TaskManagement::TaskComment"},
            "created_by": {"id": 5, "type": "User"},
        },
        "id": "0190d0a0-0000-7000-8000-000000000001",
        "file": {"thumbnail": None, "small": None, "original": "https://h/o"},
        "created_at": "2024-01-15T11:00:00Z",
        "updated_at": "2024-01-15T11:00:00Z",
        "canceled_at": None,
    }
    assert list(shaped["file"]) == ["thumbnail", "small", "original"]
    named = answers.attachment(dict(record, created_by={"type": "Application", "id": "app-x"}), 1)
    assert named["links"]["created_by"] == {"id": "app-x", "type": "Application"}
    assert set(answers.attachment(record, 1, frozenset({"created_at"}))) == {"links", "id", "created_at"}


def test_account_number():
    def who(account_id: str, **bindings: str) -> Principal:
        return Principal(account_id, "User", "5", frozenset({READ}), bindings=bindings)

    assert answers.account_number(who("1234")) == 1234
    assert answers.account_number(who("acme", account="77")) == 77
    for refused in (who("acme"), who("12a"), who("1234", account="x"), who("1" * 19)):
        with pytest.raises(ApiError) as caught:
            answers.account_number(refused)
        assert caught.value.status == 403


def test_list_params_and_times():
    assert inputs.parse_list_params({}) == inputs.ListParams(1, 100, None, None)
    params = inputs.parse_list_params({"page": "3", "per_page": "500", "fields": "id, file", "other": "x"})
    assert (params.page, params.per_page, params.offset, params.fields) == (3, 100, 200, frozenset({"id", "file"}))
    utc = dt.datetime(2014, 1, 1, 15, 43, 6, tzinfo=dt.UTC)
    for text in ("2014-01-01 15:43:06 UTC", "2014-01-01T15:43:06Z", "2014-01-01T16:43:06+01:00", "2014-01-01T15:43:06"):
        assert inputs.parse_time(text) == utc
    assert inputs.parse_time("2014-13-01") is None and inputs.parse_time("soon") is None
    assert answers.synced_at(utc) == "2014-01-01 15:43:06 UTC"
    with pytest.raises(ApiError) as caught:
        inputs.parse_list_params({"page": "0", "per_page": "-1", "updated_since": "x"})
    assert set(caught.value.extra["errors"]) == {"page", "per_page", "updated_since"}


def test_ids_and_pagination_headers():
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert inputs.parse_ids(f"{a},{b.upper()},{a}") == [a, b]
    assert inputs.parse_ids("12") is None and inputs.parse_ids(f"{a},x") is None and inputs.parse_ids(",") is None
    with pytest.raises(ApiError):
        inputs.parse_ids(",".join(str(uuid.uuid4()) for _ in range(101)))
    url = URL("http://h/compat/bookingsync/api/v3/task_management/attachments?fields=id&page=1")
    headers = answers.pagination_headers(url, 1, 2, 5)
    assert headers["Link"] == (
        '<http://h/compat/bookingsync/api/v3/task_management/attachments?fields=id&page=1&per_page=2>; rel="first", '
        '<http://h/compat/bookingsync/api/v3/task_management/attachments?fields=id&page=2&per_page=2>; rel="next", '
        '<http://h/compat/bookingsync/api/v3/task_management/attachments?fields=id&page=3&per_page=2>; rel="last"'
    )
    assert (headers["X-Total-Pages"], headers["X-Total-Count"], headers["X-Per-Page"]) == ("3", "5", "2")
    empty = answers.pagination_headers(url, 1, 100, 0)
    assert empty["X-Total-Pages"] == "0" and 'rel="next"' not in empty["Link"]


def test_envelope_is_the_documented_one():
    body = answers.envelope([], {"deleted_ids": []})
    assert list(body) == ["links", "attachments", "meta"] and body["links"] == DOCUMENTED["links"]
