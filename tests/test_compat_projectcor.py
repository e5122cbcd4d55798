"""The ``projectcor`` profile: ProjectCor's task attachments (seed 002) under ``/compat/projectcor``.

The document's example request as written (base URL and credential replaced), its answer's exact keys and
types, and each rule of issue 11's row: many ``file`` parts with per-file errors while the rest succeed,
``files_q`` equal to the native count, ``available``, ``session_token``, ``attachment_parent_id`` as
versioning by integer id, ``status``, ``created_from``; tenancy, refusals that store nothing, the bytes and
thumbnails round trip.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid
from typing import Any

import aiohttp
import orjson
import pytest
import pyvips
from aiohttp.test_utils import TestClient, TestServer

from services.compat.app import create_app as compat_app
from services.compat.projectcor import shapes
from services.core.contract import AttachmentRow, ErrorInfo, ItemError
from services.core.errors import ApiError
from tests.conftest import Service, jpeg_bytes, png_bytes

BASE = "/compat/projectcor/v1"
NoneType = type(None)

# The answer's keys and types, as the document shows them ("<string>", 123, true); None where attachd has
# nothing to put (docs/compat/projectcor.md says which and why).
ANSWER = {"files": list, "files_q": int, "errors": list}
FILE: dict[str, tuple[type, ...]] = {
    "id": (int,),
    "url": (str,),
    "name": (str,),
    "created_at": (str,),
    "updated_at": (str,),
    "source": (str,),
    "size": (int,),
    "filename": (str,),
    "available": (bool,),
    "item_id": (int,),
    "originalname": (str,),
    "attachment_parent_id": (int, NoneType),
    "file_type": (str,),
    "discussions_id": (NoneType,),
    "user_id": (int, NoneType),
    "parent_id": (int, NoneType),
    "type": (str,),
    "version": (int,),
    "status": (str, NoneType),
    "token": (str, NoneType),
    "company_id": (int, NoneType),
    "task_log_reworks_id": (NoneType,),
    "task_log_id": (int,),
    "media_type": (str,),
    "graphics_count": (NoneType,),
    "created_from": (str,),
}
ERROR = {"filename": str, "message": str}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def task_id() -> int:
    return random.randint(1, 10**9)


def form(*files: tuple[str, bytes], **fields: str) -> aiohttp.FormData:
    """A multipart body as curl --form writes it: the fields, then each file as a ``file`` part."""
    body = aiohttp.FormData(default_to_multipart=True)
    for key, value in fields.items():
        body.add_field(key, value)
    for filename, data in files:
        body.add_field("file", data, filename=filename, content_type="application/octet-stream")
    return body


# The document's example: curl --form file='@example-file' --form available=true --form session_token=null
# --form attachment_parent_id=null --form status=null --form created_from=task_panel
EXAMPLE_FIELDS = {
    "available": "true",
    "session_token": "null",
    "attachment_parent_id": "null",
    "status": "null",
    "created_from": "task_panel",
}


async def upload(service: Service, task: int | str, body: aiohttp.FormData, **auth: Any) -> aiohttp.ClientResponse:
    return await service.client.post(f"{BASE}/tasks/{task}/attachments", data=body, headers=service.auth(**auth))


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def dimensions(data: bytes) -> tuple[int, int]:
    image = pyvips.Image.new_from_buffer(data, "")
    return image.width, image.height


def assert_file_shape(record: dict[str, Any]) -> None:
    assert list(record) == list(FILE)
    for key, types in FILE.items():
        assert isinstance(record[key], types), (key, record[key])
        assert not (isinstance(record[key], bool) and bool not in types), key  # True is an int too
    assert TIMESTAMP.fullmatch(record["created_at"]) and TIMESTAMP.fullmatch(record["updated_at"])


def assert_answer_shape(body: dict[str, Any], *, with_errors: bool) -> None:
    expected = ANSWER if with_errors else {k: v for k, v in ANSWER.items() if k != "errors"}
    assert list(body) == list(expected)
    for key, kind in expected.items():
        assert isinstance(body[key], kind) and not isinstance(body[key], bool), key
    for record in body["files"]:
        assert_file_shape(record)
    for error in body.get("errors", []):
        assert list(error) == list(ERROR) and all(isinstance(error[k], str) for k in ERROR)


async def native_count(service: Service, task: int, **auth: Any) -> int:
    resp = await service.client.get(
        f"/v1/attachments/count?target_type=Task&target_id={task}", headers=service.auth(**auth)
    )
    assert resp.status == 200
    count: int = (await resp.json())["count"]
    return count


async def nothing_stored(service: Service) -> None:
    assert await service.rows() == []
    assert await service.settled_keys() == []


# --- the document's example, its answer's shape ------------------------------------------------------------


async def test_the_documented_example_as_written(service: Service) -> None:
    account, task = str(random.randint(10**6, 10**9)), task_id()  # a numeric company, a numeric user
    image = png_bytes()
    resp = await upload(service, task, form(("example-file", image), **EXAMPLE_FIELDS), account=account, sub="42")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert_answer_shape(body, with_errors=False)  # errors: "present only when individual files failed"
    [record] = body["files"]
    [row] = await service.rows(account)
    assert record["id"] == row["seq"]
    assert (record["item_id"], record["task_log_id"]) == (task, task)
    assert record["name"] == record["originalname"] == "example-file.png"  # named after what it holds
    assert record["filename"] == f"{row['id']}.png"
    assert (record["file_type"], record["media_type"], record["size"]) == ("png", "image/png", len(image))
    assert (record["available"], record["status"], record["token"], record["created_from"]) == (
        True,
        None,
        None,
        "task_panel",
    )
    assert (record["version"], record["attachment_parent_id"], record["parent_id"]) == (1, None, None)
    assert (record["user_id"], record["company_id"]) == (42, int(account))
    assert (record["source"], record["type"]) == ("local", "FILE_ATTACHMENT")
    assert body["files_q"] == 1 == await native_count(service, task, account=account)


async def test_the_answer_with_errors_has_every_documented_key(make_service) -> None:
    async with make_service(max_file_bytes=300_000) as service:
        task = task_id()
        body = form(("photo.jpg", jpeg_bytes()), ("tool.exe", b"MZ" + b"\0" * 100), **EXAMPLE_FIELDS)
        resp = await upload(service, task, body)
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
        assert_answer_shape(answer, with_errors=True)
        assert [f["originalname"] for f in answer["files"]] == ["photo.jpg"]
        assert answer["errors"][0]["filename"] == "tool.exe"


# --- many files: per-file errors while the rest succeed -------------------------------------------------------


async def test_many_files_each_refused_file_is_an_error_while_the_rest_are_stored(make_service) -> None:
    async with make_service(max_file_bytes=300_000) as service:
        task = task_id()
        small, big = jpeg_bytes(), b"x" * 400_000
        body = form(("a.jpg", small), ("huge.txt", big), ("run.exe", b"MZ\0\0"), ("notes.txt", b"hello"))
        resp = await upload(service, task, body)
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
        assert [f["originalname"] for f in answer["files"]] == ["a.jpg", "notes.txt"]
        errors = {e["filename"]: e["message"] for e in answer["errors"]}
        assert list(errors) == ["huge.txt", "run.exe"]
        assert errors["huge.txt"].startswith("Size exceeded: ") and "300000 bytes" in errors["huge.txt"]
        assert errors["run.exe"].startswith("Invalid extension: ") and ".exe" in errors["run.exe"]
        rows = await service.rows()
        assert [r["filename"] for r in rows] == ["a.jpg", "notes.txt"]
        assert answer["files_q"] == 2 == await native_count(service, task)
        assert not [k for k in await service.stored_keys() if k.startswith("staging/")]


async def test_every_file_refused_is_still_a_partial_answer_that_lists_them_and_stores_nothing(make_service) -> None:
    async with make_service(max_file_bytes=1000) as service:
        task = task_id()
        resp = await upload(service, task, form(("big.txt", b"x" * 5000), ("run.exe", b"MZ\0\0")))
        assert resp.status == 200
        body = await resp.json()
        assert body["files"] == [] and body["files_q"] == 0 == await native_count(service, task)
        assert [e["filename"] for e in body["errors"]] == ["big.txt", "run.exe"]
        assert body["errors"][0]["message"].startswith("Size exceeded")
        assert body["errors"][1]["message"].startswith("Invalid extension")
        await nothing_stored(service)


async def test_files_q_counts_what_is_live_on_the_task_only(service: Service) -> None:
    task, other_task = task_id(), task_id()
    await upload(service, other_task, form(("x.txt", b"elsewhere")))
    first = await (await upload(service, task, form(("a.txt", b"one"), ("b.txt", b"two")))).json()
    assert first["files_q"] == 2
    deleted = await service.client.delete(f"/v1/attachments/{first['files'][0]['id']}", headers=service.auth())
    assert deleted.status == 204
    second = await (await upload(service, task, form(("c.txt", b"three")))).json()
    assert second["files_q"] == 2 == await native_count(service, task)


# --- the form fields ------------------------------------------------------------------------------------------


async def test_available_false_hides_the_file(service: Service) -> None:
    task = task_id()
    body = await (await upload(service, task, form(("a.txt", b"hidden"), available="false"))).json()
    assert body["files"][0]["available"] is False
    [row] = await service.rows()
    assert row["available"] is False


async def test_session_token_groups_uploads_and_defers_their_announcement(service: Service) -> None:
    task = task_id()
    for name in ("a.txt", "b.txt"):
        resp = await upload(service, task, form((name, b"part of a batch"), session_token="batch-7"))
        assert resp.status == 200
        assert (await resp.json())["files"][0]["token"] == "batch-7"
    assert [r["session_token"] for r in await service.rows()] == ["batch-7", "batch-7"]
    assert not [e for e in await service.events() if e["event_type"] == "attachment.created"]
    closed = await service.client.post("/v1/sessions/batch-7/close", headers=service.auth())
    assert closed.status == 200
    assert len((await closed.json())["attachments"]) == 2


@pytest.mark.parametrize("status", ["approved", "pending", "required", "null"])
async def test_status_takes_the_documented_values(service: Service, status: str) -> None:
    body = await (await upload(service, task_id(), form(("a.txt", b"x"), status=status))).json()
    expected = None if status == "null" else status
    assert body["files"][0]["status"] == expected
    assert [r["status"] for r in await service.rows()] == [expected]


@pytest.mark.parametrize("created_from", ["task_panel", "rework", "feedback"])
async def test_created_from_takes_the_documented_values(service: Service, created_from: str) -> None:
    body = await (await upload(service, task_id(), form(("a.txt", b"x"), created_from=created_from))).json()
    assert body["files"][0]["created_from"] == created_from
    assert [r["created_from"] for r in await service.rows()] == [created_from]


async def test_created_from_defaults_to_task_panel(service: Service) -> None:
    body = await (await upload(service, task_id(), form(("a.txt", b"x")))).json()
    assert body["files"][0]["created_from"] == "task_panel"


async def test_attachment_parent_id_makes_the_next_version_by_integer_id(service: Service) -> None:
    task = task_id()
    first = (await (await upload(service, task, form(("plan.txt", b"v1")))).json())["files"][0]
    resp = await upload(service, task, form(("plan.txt", b"v2"), attachment_parent_id=str(first["id"])))
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    second = answer["files"][0]
    assert second["version"] == 2
    assert second["attachment_parent_id"] == first["id"] == second["parent_id"]
    assert answer["files_q"] == 1 == await native_count(service, task)  # the old version is not counted
    third = (
        await (await upload(service, task, form(("plan.txt", b"v3"), attachment_parent_id=str(second["id"])))).json()
    )["files"][0]
    assert (third["version"], third["attachment_parent_id"], third["parent_id"]) == (3, second["id"], first["id"])


async def test_attachment_parent_id_on_another_task_or_deleted_is_refused(service: Service) -> None:
    task = task_id()
    first = (await (await upload(service, task, form(("plan.txt", b"v1")))).json())["files"][0]
    elsewhere = await upload(service, task_id(), form(("plan.txt", b"v2"), attachment_parent_id=str(first["id"])))
    assert elsewhere.status == 400
    assert (await elsewhere.json())["field"] == "attachment_parent_id"
    assert (await service.client.delete(f"/v1/attachments/{first['id']}", headers=service.auth())).status == 204
    deleted = await upload(service, task, form(("plan.txt", b"v2"), attachment_parent_id=str(first["id"])))
    assert deleted.status == 404
    assert (await deleted.json())["field"] == "attachment_parent_id"
    assert len(await service.rows()) == 1


# --- bad input: a clear error in the profile's shape, nothing stored ---------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"status": "done"}, "status"),
        ({"created_from": "api"}, "created_from"),
        ({"created_from": "email"}, "created_from"),
        ({"available": "maybe"}, "available"),
        ({"attachment_parent_id": "abc"}, "attachment_parent_id"),
        ({"attachment_parent_id": "-3"}, "attachment_parent_id"),
        ({"target_id": "9"}, "target_id"),
        ({"name": "renamed"}, "name"),
        ({"mode": "atomic"}, "mode"),
    ],
)
async def test_a_bad_field_is_a_400_naming_it(service: Service, fields: dict[str, str], field: str) -> None:
    resp = await upload(service, task_id(), form(("a.txt", b"x"), **fields))
    assert resp.status == 400
    body = await resp.json()
    assert list(body) == ["message", "code", "field"] and body["field"] == field
    await nothing_stored(service)


async def test_no_file_part_is_a_400_naming_file(service: Service) -> None:
    resp = await upload(service, task_id(), form(**EXAMPLE_FIELDS))
    assert resp.status == 400
    assert (await resp.json())["field"] == "file"
    await nothing_stored(service)


async def test_a_body_that_is_not_multipart_is_refused(service: Service) -> None:
    resp = await service.client.post(f"{BASE}/tasks/5/attachments", json={"file": "x"}, headers=service.auth())
    assert resp.status == 415
    assert (await resp.json())["code"] == "unsupported_media_type"
    await nothing_stored(service)


@pytest.mark.parametrize("task", ["abc", "0", "-1", "1.5"])
async def test_a_task_id_that_is_not_a_positive_integer_is_a_400(service: Service, task: str) -> None:
    resp = await upload(service, task, form(("a.txt", b"x")))
    assert resp.status == 400
    assert (await resp.json())["field"] == "task_id"
    await nothing_stored(service)


async def test_credentials_are_required_and_need_the_write_scope(service: Service) -> None:
    missing = await service.client.post(f"{BASE}/tasks/5/attachments", data=form(("a.txt", b"x")))
    assert missing.status == 401
    assert list(await missing.json()) == ["message", "code"]
    reader = await upload(service, 5, form(("a.txt", b"x")), scope="attachments:read")
    assert reader.status == 403
    await nothing_stored(service)


async def test_too_many_files_is_refused(service: Service) -> None:
    files = [(f"f{i}.txt", b"x") for i in range(service.settings.max_files_per_request + 1)]
    resp = await upload(service, task_id(), form(*files))
    assert resp.status == 400
    assert (await resp.json())["field"] == "file"
    await nothing_stored(service)


async def test_a_retry_with_the_same_idempotency_key_uploads_nothing_again(service: Service) -> None:
    task, headers = task_id(), {**service.auth(), "Idempotency-Key": "upload-1"}
    answers = []
    for _ in range(2):
        resp = await service.client.post(
            f"{BASE}/tasks/{task}/attachments", data=form(("a.txt", b"once")), headers=headers
        )
        assert resp.status == 200
        answers.append(await resp.json())
    assert answers[0]["files"][0]["id"] == answers[1]["files"][0]["id"]
    assert len(await service.rows()) == 1


async def test_the_accounts_byte_window_holds_for_profile_uploads_too(make_service) -> None:
    async with make_service(byte_budget=20_000) as service:
        task = task_id()
        assert (await upload(service, task, form(("a.txt", b"x" * 5_000)))).status == 200
        resp = await upload(service, task, form(("b.txt", b"y" * 16_000)))
        assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
        assert list(await resp.json()) == ["message", "code"]
        assert len(await service.rows()) == 1


async def test_the_standalone_compat_app_serves_the_profile(service: Service) -> None:
    """`attachd compat` runs the profiles on their own: an upload and a read through that app."""
    client = TestClient(TestServer(compat_app(service.settings)))
    await client.start_server()
    try:
        url, task = f"{BASE}/tasks/{{}}/attachments", task_id()
        resp = await client.post(url.format(task), data=form(("a.txt", b"compat")), headers=service.auth())
        assert resp.status == 200, await resp.text()
        listed = await (await client.get(url.format(task), headers=service.auth())).json()
        assert listed["files_q"] == 1 and listed["files"][0]["size"] == len(b"compat")
    finally:
        await client.close()


# --- API keys -------------------------------------------------------------------------------------------------


async def test_an_api_key_made_for_the_profile(service: Service, attachd_keys) -> None:
    """`attachd keys create --profile projectcor`: the bearer token COR clients send; acting as user 42 of
    company 777; refused elsewhere, without the scope, and at once when revoked."""
    options = ("--profile", "projectcor", "--actor-type", "User", "--actor-id", "42", "--bind", "company=777")
    key = {"Authorization": f"Bearer {(await attachd_keys('create', '--account', service.account, *options))[-1]}"}
    task = task_id()
    url = f"{BASE}/tasks/{task}/attachments"
    resp = await service.client.post(url, data=form(("example-file", png_bytes()), **EXAMPLE_FIELDS), headers=key)
    assert resp.status == 200, await resp.text()
    [record] = (await resp.json())["files"]
    assert (record["user_id"], record["company_id"], record["item_id"]) == (42, 777, task)
    [row] = await service.rows()  # stored under the key's account, as its user
    assert (row["seq"], row["created_by_type"], row["created_by_id"]) == (record["id"], "User", "42")
    listed = await service.client.get(url, headers=key)
    assert [f["id"] for f in (await listed.json())["files"]] == [record["id"]]

    reader = (await attachd_keys("create", "--account", service.account, "--scope", "attachments:read"))[-1]
    refused = await service.client.post(url, data=form(("a.txt", b"x")), headers={"Authorization": f"Bearer {reader}"})
    assert refused.status == 403 and list(await refused.json()) == ["message", "code"]
    elsewhere = (await attachd_keys("create", "--account", service.account, "--profile", "toggl"))[-1]
    refused = await service.client.get(url, headers={"Authorization": f"Bearer {elsewhere}"})
    assert refused.status == 401 and "toggl" in (await refused.json())["message"]

    listed_keys = orjson.loads("\n".join(await attachd_keys("list", "--account", service.account, "--json")))
    [ours] = [k for k in listed_keys if k["profile"] == "projectcor"]
    await attachd_keys("revoke", str(ours["id"]))
    resp = await service.client.get(url, headers=key)
    assert resp.status == 401 and list(await resp.json()) == ["message", "code"]
    assert len(await service.rows()) == 1


# --- tenancy ---------------------------------------------------------------------------------------------------


async def test_another_tenants_attachment_id_is_a_404(service: Service) -> None:
    other, task = service.other_account(), task_id()
    theirs = (await (await upload(service, task, form(("a.txt", b"theirs")), account=other)).json())["files"][0]
    resp = await upload(service, task, form(("a.txt", b"mine"), attachment_parent_id=str(theirs["id"])))
    assert resp.status == 404
    body = await resp.json()
    assert body["field"] == "attachment_parent_id"
    await nothing_stored(service)
    listed = await service.client.get(f"{BASE}/tasks/{task}/attachments", headers=service.auth())
    assert await listed.json() == {"files": [], "files_q": 0}


# --- the bytes, the thumbnails ---------------------------------------------------------------------------------


async def test_the_bytes_round_trip_and_images_get_both_thumbnails(service: Service) -> None:
    photo, notes = jpeg_bytes(1200, 800), "Übergabe: 3 Räume\n".encode() * 100
    answer = await (await upload(service, task_id(), form(("site.jpg", photo), ("notes.txt", notes)))).json()
    for record, data in zip(answer["files"], (photo, notes), strict=True):
        got = await service.client.get(path_of(record["url"]))  # a signed link: no credential needed
        assert got.status == 200 and await got.read() == data
    image_id = answer["files"][0]["id"]  # native routes take the integer id
    for variant, size in (("thumbnail", (72, 48)), ("small", (161, 107))):
        got = await service.client.get(f"/v1/attachments/{image_id}/file/{variant}", headers=service.auth())
        assert got.status == 200 and dimensions(await got.read()) == size


# --- GET: the task's files -------------------------------------------------------------------------------------


async def test_get_lists_the_tasks_files_in_the_upload_answers_shape(service: Service) -> None:
    task = task_id()
    uploaded = await (await upload(service, task, form(("a.txt", b"1"), ("b.txt", b"2")))).json()
    await upload(service, task_id(), form(("elsewhere.txt", b"3")))
    resp = await service.client.get(f"{BASE}/tasks/{task}/attachments", headers=service.auth())
    assert resp.status == 200
    body = await resp.json()
    assert_answer_shape(body, with_errors=False)
    assert [f["id"] for f in body["files"]] == [f["id"] for f in uploaded["files"]]
    assert body["files_q"] == 2
    unknown = await service.client.get(f"{BASE}/tasks/{task}/attachments?page=2", headers=service.auth())
    assert unknown.status == 400 and (await unknown.json())["field"] == "page"


# --- the pure translations -------------------------------------------------------------------------------------


def test_the_upload_form_puts_the_task_first_and_always_asks_for_partial() -> None:
    translate = shapes.UploadForm(77)
    assert translate({}) == {"target_type": "Task", "target_id": "77", "mode": "partial", "created_from": "task_panel"}
    assert translate(EXAMPLE_FIELDS) == {
        "target_type": "Task",
        "target_id": "77",
        "mode": "partial",
        "available": "true",
        "session_token": "null",
        "status": "null",
        "created_from": "task_panel",
    }
    assert translate({"attachment_parent_id": "12", "created_from": "rework"})[shapes.VERSION_FIELD] == "12"


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"created_from": "api"}, "created_from"), ({"attachment_parent_id": "1e3"}, "attachment_parent_id")],
)
def test_the_upload_form_refuses_what_the_document_does_not_allow(fields: dict[str, str], field: str) -> None:
    with pytest.raises(ApiError) as refused:
        shapes.UploadForm(1)(fields)
    assert (refused.value.status, refused.value.field) == (400, field)


def _row(**changes: Any) -> AttachmentRow:
    now = dt.datetime(2023, 11, 7, 5, 31, 56, 123456, tzinfo=dt.UTC)
    values: dict[str, Any] = {
        "id": uuid.UUID(int=1),
        "seq": 10,
        "account_id": "acct-x",
        "target_type": "Task",
        "target_id": "77",
        "field": None,
        "parent_type": None,
        "parent_attachment_id": None,
        "version": 1,
        "version_root": None,
        "is_latest": True,
        "ancestors": [],
        "attachment_type": "FILE_ATTACHMENT",
        "name": "Plan",
        "filename": "plan.PDF",
        "content_type": "application/pdf",
        "size": 5,
        "sha256": None,
        "storage_key": "objects/x",
        "url": None,
        "width": None,
        "height": None,
        "variants": None,
        "display_order": 0,
        "available": True,
        "status": "pending",
        "created_from": "feedback",
        "publish": "all",
        "session_token": None,
        "created_by_type": "Application",
        "created_by_id": "7",
        "impersonator_id": None,
        "created_at": now,
        "updated_at": now,
        "canceled_at": None,
    }
    return AttachmentRow(**{**values, **changes})


def test_file_record_maps_every_documented_key() -> None:
    first, previous = uuid.UUID(int=2), uuid.UUID(int=3)
    record = shapes.file_record(
        _row(version=3, version_of=previous, version_root=first),
        url="https://h/f",
        seqs={first: 4, previous: 8},
        company=None,
    )
    assert list(record) == list(FILE)
    assert record["id"] == 10 and record["url"] == "https://h/f"
    assert record["created_at"] == "2023-11-07T05:31:56Z"
    assert (record["filename"], record["originalname"], record["file_type"]) == (
        f"{uuid.UUID(int=1)}.pdf",
        "plan.PDF",
        "pdf",
    )
    assert (record["attachment_parent_id"], record["parent_id"], record["version"]) == (8, 4, 3)
    assert (record["item_id"], record["task_log_id"]) == (77, 77)
    assert (record["user_id"], record["company_id"]) == (None, None)  # an application; no numeric company


def test_the_company_is_a_keys_binding_or_a_numeric_account() -> None:
    assert shapes.company_id("acct-x", {"company": "12"}) == 12
    assert shapes.company_id("345", {}) == 345
    assert shapes.company_id("acct-x", {}) is None


def test_file_record_of_a_link_has_its_own_url_and_no_size() -> None:
    record = shapes.file_record(
        _row(attachment_type="URL", storage_key=None, url="https://example.com/a", size=None, filename=None),
        url=None,
        seqs={},
        company=3,
    )
    assert (record["url"], record["source"], record["size"], record["file_type"]) == (
        "https://example.com/a",
        "url",
        None,
        None,
    )


def test_errors_speak_the_documents_words_and_field_names() -> None:
    too_big = ItemError(index=0, filename="a.bin", code="size_exceeded", message="too big", status=413, field="file")
    assert shapes.file_error(too_big) == {"filename": "a.bin", "message": "Size exceeded: too big"}
    parent = ItemError(
        index=0, code="not_found", message="version_of names no attachment", status=404, field="version_of"
    )
    refused = shapes.request_failure(ErrorInfo(code="upload_refused", message="m", status=404), [parent, parent])
    assert refused is not None
    status, body = refused
    assert status == 404
    assert body == {
        "message": "attachment_parent_id names no attachment",
        "code": "not_found",
        "field": "attachment_parent_id",
    }
    assert shapes.request_failure(ErrorInfo(code="upload_refused", message="m", status=413), [too_big]) is None
    assert shapes.error_body("missing_source", "give a file", "data")["field"] == "file"
