"""The toggl profile: Toggl Focus task attachments under /compat/toggl, against the real core (ingress,
worker, Postgres, storage). Every example request of the seed document, then every rule of the profile;
the pure translation first."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pyvips

from services.compat.toggl import translate
from services.compat.toggl.translate import TaskPath
from services.core.errors import ApiError
from services.core.listing import SortKey
from services.ingress.multipart import FilePart, Form
from tests.conftest import Service, jpeg_bytes, png_bytes

ORG, WS, TASK = 1, 2, 3
BASE = f"/compat/toggl/api/organizations/{ORG}/workspaces/{WS}/tasks/{TASK}/attachments"
ITEM_TYPES: dict[str, Any] = {
    "created_at": str,
    "deleted_at": (str, type(None)),
    "display_order": int,
    "id": int,
    "mime_type": str,
    "name": str,
    "size": int,
    "task_id": int,
    "updated_at": str,
}
ERROR_KEYS = {"error", "error_description", "trace_id"}
# The headers of every example in the seed document.
JSON_HEADERS = {"Content-Type": "application/json"}


def base_url(org: int = ORG, ws: int = WS, task: int = TASK) -> str:
    return f"/compat/toggl/api/organizations/{org}/workspaces/{ws}/tasks/{task}/attachments"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def toggl_auth(svc: Service, account: str | None = None, **kw: Any) -> dict[str, str]:
    """As Toggl's clients send an API token: HTTP basic, the token as user, "api_token" as password."""
    return basic(svc.token(account, **kw), "api_token")


def assert_item(item: Any) -> None:
    assert isinstance(item, dict)
    assert set(item) == set(ITEM_TYPES)
    for key, kind in ITEM_TYPES.items():
        assert isinstance(item[key], kind), (key, item[key])
        assert not isinstance(item[key], bool), key


def assert_error(body: Any, kind: str, *mentions: str) -> None:
    assert set(body) == ERROR_KEYS, body
    assert body["error"] == kind
    assert isinstance(body["trace_id"], str) and body["trace_id"]
    for text in mentions:
        assert text in body["error_description"], body


def form(*files: tuple[str, str, bytes, str], **fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for key, value in fields.items():
        data.add_field(key, value)
    for part, filename, body, content_type in files:
        data.add_field(part, body, filename=filename, content_type=content_type)
    return data


def bulk_form(files: list[tuple[str, bytes, str]], fields: dict[str, str]) -> aiohttp.FormData:
    return form(*(("files", name, body, kind) for name, body, kind in files), **fields)


async def create(svc: Service, name: str | None = "Photo", display_order: str = "1", url: str = BASE, **kw: Any):
    fields = {"display_order": display_order}
    if name is not None:
        fields["name"] = name
    data = form(("file", "photo.jpg", jpeg_bytes(), "image/jpeg"), **fields)
    return await svc.client.post(url, data=data, headers={**toggl_auth(svc), **kw})


async def created_item(svc: Service, **kw: Any) -> dict[str, Any]:
    response = await create(svc, **kw)
    assert response.status == 201, await response.text()
    return await response.json()


async def nothing_stored(svc: Service) -> None:
    assert await svc.rows() == []
    assert await svc.settled_keys() == []


# -- the pure translation ---------------------------------------------------------------------------


def test_the_credential_is_a_bearer_token_or_basic_as_toggl_clients_send_it():
    assert translate.credential({"Authorization": "Bearer toggl_sk_abc"}) == "toggl_sk_abc"
    assert translate.credential(basic("key123", "api_token")) == "key123"
    assert translate.credential(basic("me@example.com", "key123")) == "key123"
    assert translate.credential(basic("key123", "")) is None
    assert translate.credential({}) is None
    assert translate.credential({"Authorization": "Basic !!!"}) is None


def test_a_key_bound_to_an_organization_and_workspace_serves_those_only():
    path = TaskPath(1, 2, 3)
    translate.check_bindings({}, path)
    translate.check_bindings({"org": "1", "workspace": "2"}, path)
    translate.check_bindings({"workspace": "2"}, path)
    for bindings, field in (
        ({"org": "9", "workspace": "2"}, "organization_id"),
        ({"org": "1", "workspace": "9"}, "workspace_id"),
        ({"project": "1"}, "project"),
    ):
        with pytest.raises(ApiError) as refused:
            translate.check_bindings(bindings, path)
        assert (refused.value.status, refused.value.field) == (403, field)


def test_a_task_is_a_target_scoped_by_organization_and_workspace():
    path = translate.task_path({"organization_id": "10", "workspace_id": "20", "task_id": "30"})
    assert path == TaskPath(10, 20, 30)
    assert path.target_id == "10:20:30"
    assert translate.task_id_of(path.target_id) == 30
    for bad in ("abc", "-1", "1.5", "", "1" * 19, "١٢"):
        with pytest.raises(ApiError) as refused:
            translate.task_path({"organization_id": "1", "workspace_id": "2", "task_id": bad})
        assert (refused.value.status, refused.value.field) == (400, "task_id")


def test_a_row_becomes_the_documented_item():
    now = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    row = {
        "seq": 17,
        "id": uuid.uuid4(),
        "target_type": "Task",
        "target_id": "1:2:3",
        "name": "Photo",
        "content_type": "image/jpeg",
        "size": 1234,
        "display_order": 4,
        "created_at": now,
        "updated_at": now,
        "canceled_at": None,
        "filename": "photo.jpg",
    }
    assert translate.item(row) == {
        "created_at": now,
        "deleted_at": None,
        "display_order": 4,
        "id": 17,
        "mime_type": "image/jpeg",
        "name": "Photo",
        "size": 1234,
        "task_id": 3,
        "updated_at": now,
    }


def test_errors_have_toggls_shape_and_name_the_field():
    body = translate.error_body(ApiError("missing_field", "is required", field="display_order"), "t1")
    assert body == {"error": "validation", "error_description": "display_order: is required", "trace_id": "t1"}
    body = translate.error_body(translate.not_found(), "t2")
    assert body == {"error": "not_found", "error_description": "TaskAttachment does not exist", "trace_id": "t2"}
    assert translate.error_body(ApiError("x", "boom", status=500), "t")["error"] == "internal_error"
    assert translate.error_body(ApiError("size_exceeded", "too big", status=413), "t")["error"] == "size_exceeded"
    assert translate.error_body(ApiError("insufficient_scope", "no", status=403), "t")["error"] == "forbidden"


def test_order_by_is_a_list_repeated_or_comma_separated():
    assert translate.parse_order_by([]) == translate.DEFAULT_ORDER
    assert translate.parse_order_by(["display_order", "-created_at"]) == (
        SortKey("display_order", False),
        SortKey("created_at", True),
    )
    assert translate.parse_order_by(["-id,name"]) == (SortKey("seq", True), SortKey("name", False))
    for bad in (["mime_type"], ["name", "name"], ["name,-name"], [""], ["drop table"]):
        with pytest.raises(ApiError) as refused:
            translate.parse_order_by(bad)
        assert (refused.value.status, refused.value.field) == (400, "order_by")


def _form(files: int, **fields: str) -> Form:
    parts = [FilePart(index=i, filename=f"f{i}.png", content_type="image/png") for i in range(files)]
    return Form(fields=fields, files=parts)


def _refusal(check, value: Form) -> tuple[int, str | None]:
    with pytest.raises(ApiError) as refused:
        check(value)
    return refused.value.status, refused.value.field


def test_a_single_create_needs_one_file_and_its_display_order():
    translate.check_single_form(_form(1, display_order="2"))
    translate.check_single_form(_form(1, display_order="2", name="x"))
    assert _refusal(translate.check_single_form, _form(0, display_order="2")) == (400, "file")
    assert _refusal(translate.check_single_form, _form(2, display_order="2")) == (400, "file")
    assert _refusal(translate.check_single_form, _form(1, name="x")) == (400, "display_order")
    assert _refusal(translate.check_single_form, _form(1, display_order=" ")) == (400, "display_order")
    native = translate.single_form_fields(TaskPath(1, 2, 3))({"display_order": "2", "name": "x", "mode": "partial"})
    assert native == {"target_type": "Task", "target_id": "1:2:3", "display_order": "2", "name": "x"}


def test_a_bulk_create_needs_1_to_10_files_each_with_its_display_order():
    orders = {f"display_orders[{i}]": str(i) for i in range(3)}
    translate.check_bulk_form(_form(3, **orders, **{"names[1]": "b"}))
    assert _refusal(translate.check_bulk_form, _form(0)) == (400, "files")
    eleven = {f"display_orders[{i}]": "0" for i in range(11)}
    assert _refusal(translate.check_bulk_form, _form(11, **eleven)) == (400, "files")
    missing = {"display_orders[0]": "0", "display_orders[2]": "2"}
    assert _refusal(translate.check_bulk_form, _form(3, **missing)) == (400, "display_orders[1]")
    assert _refusal(translate.check_bulk_form, _form(3, **orders, **{"names[3]": "d"})) == (400, "names[3]")
    native = translate.bulk_form_fields(TaskPath(1, 2, 3))({**orders, "names[1]": "b", "target_id": "x"})
    assert native == {"target_type": "Task", "target_id": "1:2:3", "mode": "atomic", **orders, "names[1]": "b"}


def test_an_update_takes_display_order_and_name():
    assert translate.parse_update({"display_order": 3, "name": " New "}).given() == {"display_order": 3, "name": "New"}
    assert translate.parse_update({"name": "x", "id": 5, "task_id": 9}).given() == {"name": "x"}
    assert translate.parse_update({"display_order": 0, "name": None}).given() == {"display_order": 0}
    for body, field in (
        ({"display_order": "integer", "name": "string"}, "display_order"),
        ({"display_order": 1.5}, "display_order"),
        ({"name": ""}, "name"),
        ({"name": "x" * 256}, "name"),
        ({}, "display_order"),
        ({"nmae": "x"}, "display_order"),
        ([], None),
    ):
        with pytest.raises(ApiError) as refused:
            translate.parse_update(body)
        assert (refused.value.status, refused.value.field) == (400, field), body


# -- the seed document's examples, as written ------------------------------------------------------


async def test_example_list_task_attachments(service):
    svc = service
    first = await created_item(svc, name="B", display_order="2")
    second = await created_item(svc, name="A", display_order="1")
    response = await svc.client.get(BASE, headers={**JSON_HEADERS, **toggl_auth(svc)})
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"items"}
    for item in body["items"]:
        assert_item(item)
    assert [i["id"] for i in body["items"]] == [second["id"], first["id"]]  # display_order first


async def test_example_create_a_task_attachment_as_written_is_invalid(service):
    """The example POSTs no form at all (a JSON Content-Type, no body): Toggl's 400, nothing stored."""
    response = await service.client.post(BASE, headers={**JSON_HEADERS, **toggl_auth(service)})
    assert response.status == 400
    assert_error(await response.json(), "validation", "file")
    await nothing_stored(service)


async def test_example_create_a_task_attachment_with_its_parameters(service):
    svc = service
    photo = jpeg_bytes()
    data = form(("file", "photo.jpg", photo, "image/jpeg"), name="Site photo", display_order="5")
    response = await svc.client.post(BASE, data=data, headers=toggl_auth(svc))
    assert response.status == 201
    item = await response.json()
    assert_item(item)
    (row,) = await svc.rows()
    assert item == {
        "created_at": item["created_at"],
        "deleted_at": None,
        "display_order": 5,
        "id": row["seq"],
        "mime_type": "image/jpeg",
        "name": "Site photo",
        "size": len(photo),
        "task_id": TASK,
        "updated_at": item["updated_at"],
    }
    assert (row["target_type"], row["target_id"]) == ("Task", f"{ORG}:{WS}:{TASK}")
    assert await svc.storage.get_bytes(row["storage_key"]) == photo


async def test_example_create_in_bulk_as_written_is_invalid(service):
    response = await service.client.post(f"{BASE}/bulk", headers={**JSON_HEADERS, **toggl_auth(service)})
    assert response.status == 400
    assert_error(await response.json(), "validation")
    await nothing_stored(service)


async def test_example_create_in_bulk_with_its_parameters(service):
    svc = service
    files = [("a.png", png_bytes(64, 48), "image/png"), ("b.jpg", jpeg_bytes(80, 60), "image/jpeg")]
    fields = {"names[0]": "First", "display_orders[0]": "2", "display_orders[1]": "1"}
    response = await svc.client.post(f"{BASE}/bulk", data=bulk_form(files, fields), headers=toggl_auth(svc))
    assert response.status == 201
    body = await response.json()
    assert set(body) == {"items"}
    for item in body["items"]:
        assert_item(item)
    assert [(i["name"], i["display_order"], i["mime_type"]) for i in body["items"]] == [
        ("First", 2, "image/png"),
        ("b.jpg", 1, "image/jpeg"),
    ]
    rows = await svc.rows()
    assert [r["seq"] for r in rows] == [i["id"] for i in body["items"]]
    for row, (_, data, _) in zip(rows, files, strict=True):
        assert await svc.storage.get_bytes(row["storage_key"]) == data


async def test_example_update_task_attachment(service):
    """The example's body with its placeholders filled in; as written ("integer") it is a 400."""
    svc = service
    item = await created_item(svc)
    url = f"{BASE}/{item['id']}"
    response = await svc.client.put(url, json={"display_order": 7, "name": "Renamed"}, headers=toggl_auth(svc))
    assert response.status == 204
    assert await response.read() == b""
    (row,) = await svc.rows()
    assert (row["display_order"], row["name"]) == (7, "Renamed")

    literal = b'{"display_order":"integer","name":"string"}'
    response = await svc.client.put(url, data=literal, headers={**JSON_HEADERS, **toggl_auth(svc)})
    assert response.status == 400
    assert_error(await response.json(), "validation", "display_order")
    (row,) = await svc.rows()
    assert (row["display_order"], row["name"]) == (7, "Renamed")


async def test_example_delete_a_task_attachment(service):
    svc = service
    item = await created_item(svc)
    url = f"{BASE}/{item['id']}"
    # The Go example sends PUT (http.MethodPut) with no body: not a delete, and refused as an empty update.
    response = await svc.client.put(url, headers={**JSON_HEADERS, **toggl_auth(svc)})
    assert response.status == 400
    assert_error(await response.json(), "validation")
    response = await svc.client.delete(url, headers={**JSON_HEADERS, **toggl_auth(svc)})
    assert response.status == 204
    (row,) = await svc.rows()
    assert row["canceled_at"] is not None
    response = await svc.client.delete(url, headers={**JSON_HEADERS, **toggl_auth(svc)})
    assert response.status == 404
    assert_error(await response.json(), "not_found", "TaskAttachment does not exist")
    listed = await (await svc.client.get(BASE, headers=toggl_auth(svc))).json()
    assert listed == {"items": []}


async def test_example_view_a_task_attachment(service):
    svc = service
    item = await created_item(svc)
    response = await svc.client.get(f"{BASE}/{item['id']}/view", headers={**JSON_HEADERS, **toggl_auth(svc)})
    assert response.status == 200
    viewed = await response.json()
    assert_item(viewed)
    assert viewed == item


# -- the profile's rules ----------------------------------------------------------------------------


async def test_create_needs_display_order_and_a_file_and_stores_nothing_without(service):
    svc = service
    no_order = form(("file", "photo.jpg", jpeg_bytes(), "image/jpeg"), name="x")
    response = await svc.client.post(BASE, data=no_order, headers=toggl_auth(svc))
    assert response.status == 400
    assert_error(await response.json(), "validation", "display_order")
    response = await svc.client.post(BASE, data=form(name="x", display_order="1"), headers=toggl_auth(svc))
    assert response.status == 400
    assert_error(await response.json(), "validation", "file")
    bad_order = form(("file", "photo.jpg", jpeg_bytes(), "image/jpeg"), display_order="first")
    response = await svc.client.post(BASE, data=bad_order, headers=toggl_auth(svc))
    assert response.status == 400
    assert_error(await response.json(), "validation", "display_order")
    await nothing_stored(svc)


async def test_a_nameless_upload_is_named_after_its_file(service):
    item = await created_item(service, name=None)
    assert item["name"] == "photo.jpg"


async def test_bulk_is_all_or_nothing(service):
    svc = service
    files = [("a.png", png_bytes(32, 32), "image/png"), ("tool.exe", b"MZ\x90\x00" * 64, "application/octet-stream")]
    fields = {"display_orders[0]": "1", "display_orders[1]": "2"}
    response = await svc.client.post(f"{BASE}/bulk", data=bulk_form(files, fields), headers=toggl_auth(svc))
    assert response.status == 400
    assert_error(await response.json(), "validation", "files[1] (tool.exe)", "exe")
    await nothing_stored(svc)


async def test_bulk_takes_at_most_10_files(service):
    svc = service
    files = [(f"f{i}.png", png_bytes(8, 8), "image/png") for i in range(11)]
    fields = {f"display_orders[{i}]": str(i) for i in range(11)}
    response = await svc.client.post(f"{BASE}/bulk", data=bulk_form(files, fields), headers=toggl_auth(svc))
    assert response.status == 400
    assert_error(await response.json(), "validation", "10")
    await nothing_stored(svc)
    ten = bulk_form(files[:10], {k: v for k, v in fields.items() if k != "display_orders[10]"})
    response = await svc.client.post(f"{BASE}/bulk", data=ten, headers=toggl_auth(svc))
    assert response.status == 201
    assert len((await response.json())["items"]) == 10


async def test_bulk_needs_a_display_order_for_every_file(service):
    svc = service
    files = [("a.png", png_bytes(8, 8), "image/png"), ("b.png", png_bytes(8, 8), "image/png")]
    response = await svc.client.post(
        f"{BASE}/bulk", data=bulk_form(files, {"display_orders[0]": "1"}), headers=toggl_auth(svc)
    )
    assert response.status == 400
    assert_error(await response.json(), "validation", "display_orders[1]")
    await nothing_stored(svc)


async def test_order_by_repeated_or_comma_separated(service):
    svc = service
    ids = [(await created_item(svc, name=name, display_order=order))["id"] for name, order in (("b", "1"), ("a", "1"))]
    headers = toggl_auth(svc)
    for query in ("order_by=display_order&order_by=-created_at", "order_by=display_order,-created_at"):
        body = await (await svc.client.get(f"{BASE}?{query}", headers=headers)).json()
        assert [i["id"] for i in body["items"]] == ids[::-1]
    body = await (await svc.client.get(f"{BASE}?order_by=name", headers=headers)).json()
    assert [i["name"] for i in body["items"]] == ["a", "b"]
    body = await (await svc.client.get(f"{BASE}?order_by=-id", headers=headers)).json()
    assert [i["id"] for i in body["items"]] == ids[::-1]
    response = await svc.client.get(f"{BASE}?order_by=owner", headers=headers)
    assert response.status == 400
    assert_error(await response.json(), "validation", "order_by")
    response = await svc.client.get(f"{BASE}?page=2", headers=headers)
    assert response.status == 400
    assert_error(await response.json(), "validation", "page")


async def test_an_attachment_of_another_task_or_workspace_is_not_there(service):
    svc = service
    item = await created_item(svc)
    headers = toggl_auth(svc)
    for other in (base_url(task=TASK + 1), base_url(ws=WS + 1), base_url(org=ORG + 1)):
        assert await (await svc.client.get(other, headers=headers)).json() == {"items": []}
        url = f"{other}/{item['id']}"
        for response in (
            await svc.client.get(f"{url}/view", headers=headers),
            await svc.client.put(url, json={"name": "x"}, headers=headers),
            await svc.client.delete(url, headers=headers),
        ):
            assert response.status == 404
            assert_error(await response.json(), "not_found", "TaskAttachment does not exist")
    (row,) = await svc.rows()
    assert (row["name"], row["canceled_at"]) == ("Photo", None)


async def test_another_tenants_attachment_is_a_404(service):
    svc = service
    item = await created_item(svc)
    stranger = toggl_auth(svc, svc.other_account())
    url = f"{BASE}/{item['id']}"
    assert await (await svc.client.get(BASE, headers=stranger)).json() == {"items": []}
    for response in (
        await svc.client.get(f"{url}/view", headers=stranger),
        await svc.client.put(url, json={"name": "mine"}, headers=stranger),
        await svc.client.delete(url, headers=stranger),
    ):
        assert response.status == 404
        assert_error(await response.json(), "not_found")
    (row,) = await svc.rows()
    assert (row["name"], row["canceled_at"]) == ("Photo", None)


async def test_unknown_or_malformed_ids_are_clear_errors(service):
    svc = service
    headers = toggl_auth(svc)
    response = await svc.client.get(f"{BASE}/999999999/view", headers=headers)
    assert response.status == 404
    response = await svc.client.get(f"{BASE}/{uuid.uuid4()}/view", headers=headers)
    assert response.status == 400
    assert_error(await response.json(), "validation", "attachment_id")
    response = await svc.client.get(base_url(task="abc"), headers=headers)  # type: ignore[arg-type]
    assert response.status == 400
    assert_error(await response.json(), "validation", "task_id")


async def test_credentials_as_toggl_clients_send_them(service):
    svc = service
    await created_item(svc)
    token = svc.token()
    for headers in (basic(token, "api_token"), basic("me@example.com", token), {"Authorization": f"Bearer {token}"}):
        response = await svc.client.get(BASE, headers=headers)
        assert response.status == 200
        assert len((await response.json())["items"]) == 1
    response = await svc.client.get(BASE)
    assert response.status == 401
    assert_error(await response.json(), "unauthorized")
    response = await svc.client.get(BASE, headers=basic("not-a-key", "api_token"))
    assert response.status == 401
    assert_error(await response.json(), "unauthorized")


async def test_writing_needs_the_write_scope(service):
    svc = service
    read_only = basic(svc.token(scope="attachments:read"), "api_token")
    response = await svc.client.post(
        BASE, data=form(("file", "a.png", png_bytes(8, 8), "image/png"), display_order="1"), headers=read_only
    )
    assert response.status == 403
    assert_error(await response.json(), "forbidden", "attachments:write")
    await nothing_stored(svc)
    assert (await svc.client.get(BASE, headers=read_only)).status == 200


async def test_bytes_and_thumbnails_of_a_toggl_upload_are_served_natively(service):
    """The Toggl routes expose no download: the same attachment's bytes and variants are the native API's."""
    svc = service
    photo = jpeg_bytes(1200, 800)
    data = form(("file", "site.jpg", photo, "image/jpeg"), display_order="1")
    item = await (await svc.client.post(BASE, data=data, headers=toggl_auth(svc))).json()
    (row,) = await svc.rows()
    assert row["seq"] == item["id"]
    native = f"/v1/attachments/{item['id']}/file"  # the integer id is the native API's too
    assert await (await svc.client.get(native, headers=svc.auth())).read() == photo
    for variant, size in (("thumbnail", (72, 48)), ("small", (161, 107))):
        image = pyvips.Image.new_from_buffer(
            await (await svc.client.get(f"{native}/{variant}", headers=svc.auth())).read(), ""
        )
        assert (image.width, image.height) == size


async def test_only_order_by_may_repeat(service):
    svc = service
    response = await svc.client.get(f"{BASE}?order_by=name&order_by=size", headers=toggl_auth(svc))
    assert response.status == 200
    response = await svc.client.get(f"{BASE}?order_by=name&page=1&page=2", headers=toggl_auth(svc))
    assert response.status == 400  # refused before the route, in attachd's own error body
    assert (await response.json())["error"]["code"] == "duplicate_parameter"
    response = await svc.client.get("/v1/attachments?order_by=name&order_by=size", headers=svc.auth())
    assert response.status == 400  # the native list still takes one order_by
    assert (await response.json())["error"] == {
        "code": "duplicate_parameter",
        "message": "order_by is given more than once",
        "field": "order_by",
    }


async def test_the_native_limits_hold(make_service):
    async with make_service(max_file_bytes=2000) as svc:
        big = form(("file", "big.png", png_bytes(400, 400), "image/png"), display_order="1")
        response = await svc.client.post(BASE, data=big, headers=toggl_auth(svc))
        assert response.status == 413
        assert_error(await response.json(), "size_exceeded", "big.png", "2000")
        files = [("small.txt", b"hello", "text/plain"), ("big.png", png_bytes(400, 400), "image/png")]
        fields = {"display_orders[0]": "1", "display_orders[1]": "2"}
        response = await svc.client.post(f"{BASE}/bulk", data=bulk_form(files, fields), headers=toggl_auth(svc))
        assert response.status == 413
        assert_error(await response.json(), "upload_refused", "nothing was stored", "files[1] (big.png)", "2000")
        await nothing_stored(svc)


# -- API keys ----------------------------------------------------------------------------------------


@pytest.fixture
def make_key(attachd_keys) -> Callable[..., Awaitable[str]]:
    """``await make_key(account, "--bind", "org=1,workspace=2")``: a toggl key made by `attachd keys create`
    against the test database; the key is its last line."""

    async def make(account: str, *options: str) -> str:
        scope = ("--scope", "attachments:read attachments:write")
        return (await attachd_keys("create", "--account", account, *scope, *options))[-1]

    return make


async def test_a_toggl_key_bound_to_its_organization_and_workspace(service, make_key):
    svc = service
    key = await make_key(svc.account, "--profile", "toggl", "--bind", f"org={ORG},workspace={WS}")
    for auth in (basic(key, "api_token"), {"Authorization": f"Bearer {key}"}):
        data = form(("file", "a.png", png_bytes(16, 16), "image/png"), display_order="1")
        response = await svc.client.post(BASE, data=data, headers=auth)
        assert response.status == 201, await response.text()
        item = await response.json()
        assert_item(item)
        response = await svc.client.get(f"{BASE}/{item['id']}/view", headers=auth)
        assert (response.status, await response.json()) == (200, item)
    assert len(await svc.rows()) == 2

    auth = basic(key, "api_token")
    for other, field in ((base_url(org=ORG + 1), "organization_id"), (base_url(ws=WS + 1), "workspace_id")):
        response = await svc.client.get(other, headers=auth)
        assert response.status == 403
        assert_error(await response.json(), "forbidden", field)
        data = form(("file", "a.png", png_bytes(16, 16), "image/png"), display_order="1")
        response = await svc.client.post(other, data=data, headers=auth)
        assert response.status == 403
    assert len(await svc.rows()) == 2

    # Limited to the toggl profile: refused by the native API.
    response = await svc.client.get("/v1/attachments", headers={"Authorization": f"Bearer {key}"})
    assert response.status == 401


async def test_an_unbound_key_serves_any_workspace_of_its_account_only(service, make_key):
    svc = service
    key = await make_key(svc.account, "--profile", "toggl")
    stranger = await make_key(svc.other_account(), "--profile", "toggl")
    item = await created_item(svc)
    response = await svc.client.get(base_url(ws=99), headers=basic(key, "api_token"))
    assert (response.status, await response.json()) == (200, {"items": []})
    response = await svc.client.get(f"{BASE}/{item['id']}/view", headers=basic(key, "api_token"))
    assert (response.status, await response.json()) == (200, item)
    response = await svc.client.get(f"{BASE}/{item['id']}/view", headers=basic(stranger, "api_token"))
    assert response.status == 404
    assert_error(await response.json(), "not_found")
