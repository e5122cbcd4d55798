"""The Autotask profile: AttachmentInfo queries and the parents' attachment child collections, as Autotask's
clients call them (only the base URL and the credential changed), on the real core."""

from __future__ import annotations

import base64
import json
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from services.compat.autotask import entities, paging, translate
from services.core.errors import ApiError
from tests.conftest import png_bytes

ROOT = "/compat/autotask/atservicesrest/v1.0"
NULLABLE: Any = type(None)
# The seed's field table: each AttachmentInfo field and the JSON type of its non-null values.
ITEM_TYPES: dict[str, type] = {
    **{name: int for name in entities.FIELD_NAMES},
    "attachDate": str,
    "attachmentType": str,
    "contentType": str,
    "fullPath": str,
    "title": str,
}


def headers(svc, account: str | None = None, code: str = "ACME-INTEGRATION", **token: Any) -> dict[str, str]:
    """Autotask's three credential headers; the secret is an attachd credential."""
    return {"ApiIntegrationCode": code, "UserName": "api-user@example.com", "Secret": svc.token(account, **token)}


def check_item(item: dict[str, Any]) -> None:
    """Exactly the seed's fields, each null or of its documented type."""
    assert set(item) == set(entities.FIELD_NAMES)
    for name, value in item.items():
        if value is not None:
            assert type(value) is ITEM_TYPES[name], (name, value)


def file_body(name: str = "notes.txt", content: bytes = b"hello autotask", **extra: Any) -> dict[str, Any]:
    return {
        "id": 0,
        "title": name,
        "fullPath": name,
        "attachmentType": "FILE_ATTACHMENT",
        "publish": 1,
        "data": base64.b64encode(content).decode(),
        **extra,
    }


async def create(svc, collection: str, parent_id: int, body: dict[str, Any], **kw: Any) -> int:
    resp = await svc.client.post(f"{ROOT}/{collection}/{parent_id}/Attachments", json=body, headers=headers(svc, **kw))
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert set(answer) == {"itemId"} and type(answer["itemId"]) is int
    return int(answer["itemId"])


async def refused(resp, status: int = 400) -> str:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1 and isinstance(body["errors"][0], str)
    return str(body["errors"][0])


async def query(svc, body: dict[str, Any], path: str = "AttachmentInfo/query", **kw: Any) -> dict[str, Any]:
    resp = await svc.client.post(f"{ROOT}/{path}", json=body, headers=headers(svc, **kw))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def ids_of(svc, *conditions: dict[str, Any]) -> list[int]:
    return sorted(i["id"] for i in (await query(svc, {"filter": list(conditions)}))["items"])


# -- pure translations -----------------------------------------------------------------------------------


def test_the_fields_picklist_of_attachment_type_is_the_seeds():
    described = {f["name"]: f for f in entities.describe_fields()}
    assert list(described) == list(entities.FIELD_NAMES)
    assert described["attachmentType"]["picklistValues"] == [
        {"value": v, "label": label, "isDefaultValue": False, "sortOrder": order, "parentValue": "",
         "isActive": True, "isSystem": True}
        for order, (v, label) in enumerate(
            [("FILE_LINK", "File Link"), ("FOLDER_LINK", "Folder Link"), ("URL", "URL"),
             ("FILE_ATTACHMENT", "Attachment")], start=1)
    ]  # fmt: skip
    assert described["fileSize"]["isQueryable"] is False
    assert described["id"]["dataType"] == "long" and described["title"]["length"] == 255


def test_a_note_attachment_carrying_its_ticket_places_the_note_under_it():
    note = entities.BY_COLLECTION["TicketNotes"]
    new = translate.parse_create(note, 9, file_body(ticketID=42, TicketNoteID=9))
    assert translate.native_create(new) == {
        "attachment_type": "FILE_ATTACHMENT",
        "name": "notes.txt",
        "publish": "all",
        "data": base64.b64encode(b"hello autotask").decode(),
        "filename": "notes.txt",
        "target_type": "TicketNote",
        "target_id": "9",
        "parent": {"type": "Ticket", "id": "42"},
    }


@pytest.mark.parametrize(
    ("collection", "body", "words"),
    [
        ("Projects", file_body(parentAttachmentID=5), "Project attachments do not support nested attachments"),
        ("Tickets", file_body(parentID=8), "parentID 8 does not match"),
        ("Tickets", file_body(taskID=3), "taskID does not apply to Ticket attachments"),
        ("TimeEntries", file_body(ticketID=1, taskID=2), "give one of ticketID and taskID"),
        ("Tickets", file_body(colour="red"), "colour is not a field"),
        ("Tickets", {**file_body(), "title": None}, "title is required"),
        ("Tickets", {**file_body(), "data": None}, "data is required"),
        ("Tickets", file_body(publish=3), "publish must be 1"),
        ("Tickets", file_body(attachmentType="FILE"), "attachmentType must be one of"),
        ("Tickets", {"title": "x", "attachmentType": "URL", "publish": 1}, "fullPath is required"),
    ],
)
def test_bad_creates_are_named_in_autotask_terms(collection, body, words):
    with pytest.raises(ApiError) as caught:
        translate.parse_create(entities.BY_COLLECTION[collection], 7, body)
    assert words in translate.error_body(caught.value)["errors"][0]


def test_native_errors_speak_autotask():
    native = ApiError("too_long", "name is longer than 255 characters", field="name")
    assert translate.error_body(native) == {"errors": ["title is longer than 255 characters"]}
    sniffed = ApiError("type_mismatch", "the bytes are not a PNG", field="file")
    assert translate.error_body(sniffed) == {"errors": ["data: the bytes are not a PNG"]}


def test_filters_become_the_native_query_language():
    to_native = translate.native_filter
    assert to_native([{"op": "EQ", "field": "TicketID", "value": 42}]) == [
        {"field": "ancestor", "op": "eq", "value": "Ticket:42"}
    ]
    # entityID wins over parentID
    assert to_native(
        [{"op": "eq", "field": "parentID", "value": 1}, {"op": "eq", "field": "ticketID", "value": 2}]
    ) == [{"field": "ancestor", "op": "eq", "value": "Ticket:2"}]
    assert to_native([{"op": "or", "items": [{"op": "eq", "field": "parentType", "value": 4},
                                             {"op": "gte", "field": "id", "value": 10}]}]) == [
        {"op": "or", "items": [{"field": "target_type", "op": "eq", "value": "Ticket"},
                               {"field": "seq", "op": "gte", "value": 10}]}
    ]  # fmt: skip
    assert to_native([{"op": "noteq", "field": "fullPath", "value": "a"}]) == [
        {"op": "and", "items": [{"field": "filename", "op": "noteq", "value": "a"},
                                {"field": "url", "op": "noteq", "value": "a"}]}
    ]  # fmt: skip
    assert to_native([{"op": "lt", "field": "attachDate", "value": "2024-05-01"}]) == [
        {"field": "created_at", "op": "lt", "value": "2024-05-01T00:00:00+00:00"}
    ]
    ref = uuid.uuid4()
    assert to_native([{"op": "eq", "field": "parentAttachmentID", "value": 5}], {5: ref}) == [
        {"field": "parent_attachment_id", "op": "eq", "value": str(ref)}
    ]
    assert translate.attachment_refs([{"op": "or", "items": [{"op": "in", "field": "parentattachmentid",
                                                              "value": [5, "6"]}]}]) == {5, 6}  # fmt: skip


@pytest.mark.parametrize(
    ("condition", "words"),
    [
        ({"op": "gt", "field": "fileSize", "value": 1}, "fileSize cannot be queried"),
        ({"op": "like", "field": "title", "value": "a"}, "unknown operator"),
        ({"op": "eq", "field": "colour", "value": "a"}, "'colour' is not a field of AttachmentInfo"),
        ({"op": "gt", "field": "ticketID", "value": 1}, "gt does not apply to ticketID"),
        ({"op": "eq", "field": "parentType", "value": 99}, "99 is not a parentType value"),
        ({"op": "eq", "field": "id", "value": "x"}, "id must be an integer"),
        ({"op": "in", "field": "id", "value": 3}, "in takes a list"),
        ({"op": "eq", "field": "title", "value": "a", "udf": True}, "no user-defined fields"),
    ],
)
def test_bad_filters_are_refused_with_their_reason(condition, words):
    with pytest.raises(ApiError) as caught:
        translate.native_filter([condition])
    assert words in translate.error_body(caught.value)["errors"][0]


def test_page_links_walk_forward_and_back():
    first = paging.page_details("http://h/q", {"search": "{}"}, paging.Paging(), "c1", 2, 2)
    assert first["prevPageUrl"] is None
    token = urllib.parse.parse_qs(urllib.parse.urlparse(first["nextPageUrl"]).query)["paging"][0]
    second = paging.decode(token)
    assert second.cursor == "c1"
    details = paging.page_details("http://h/q", {"search": "{}"}, second, None, 1, 2)
    assert details["nextPageUrl"] is None and details["prevPageUrl"] == "http://h/q?search=%7B%7D"
    with pytest.raises(ApiError):
        paging.decode("not-a-token")


# -- through the service ---------------------------------------------------------------------------------


async def test_the_seeds_fields_call_answers_the_documented_picklist(service):
    resp = await service.client.get(f"{ROOT}/AttachmentInfo/entityInformation/fields", headers=headers(service))
    assert resp.status == 200
    described = {f["name"]: f for f in (await resp.json())["fields"]}
    types = [v["value"] for v in described["attachmentType"]["picklistValues"]]
    assert types == ["FILE_LINK", "FOLDER_LINK", "URL", "FILE_ATTACHMENT"]
    info = await (await service.client.get(f"{ROOT}/AttachmentInfo/entityInformation", headers=headers(service))).json()
    assert info["info"]["canQuery"] is True and info["info"]["canCreate"] is False
    info = await (
        await service.client.get(f"{ROOT}/TicketAttachments/entityInformation", headers=headers(service))
    ).json()
    assert (info["info"]["name"], info["info"]["canCreate"], info["info"]["canUpdate"]) == (
        "TicketAttachments",
        True,
        False,
    )
    resp = await service.client.get(f"{ROOT}/Tickets/entityInformation", headers=headers(service))
    await refused(resp, 404)


async def test_a_ticket_attachment_round_trips_its_bytes(service):
    image = png_bytes(320, 200)
    item_id = await create(service, "Tickets", 42, file_body("shot.png", image))
    (row,) = await service.rows()
    assert (row["seq"], row["target_type"], row["target_id"], row["name"]) == (item_id, "Ticket", "42", "shot.png")
    assert row["variants"] is not None  # an image: thumbnails made, though Autotask shows none

    resp = await service.client.get(f"{ROOT}/Tickets/42/Attachments/{item_id}", headers=headers(service))
    assert resp.status == 200
    (item,) = (await resp.json())["items"]
    assert base64.b64decode(item.pop("data")) == image
    check_item(item)
    assert item["id"] == item_id and item["ticketID"] == 42 and item["parentID"] == 42
    assert (item["parentType"], item["publish"], item["creatorType"]) == (4, 1, 1)
    assert (item["fileSize"], item["contentType"], item["fullPath"]) == (len(image), "image/png", "shot.png")

    resp = await service.client.get(f"{ROOT}/AttachmentInfo/{item_id}", headers=headers(service))
    body = await resp.json()
    assert resp.status == 200 and set(body) == {"item"}
    check_item(body["item"])
    assert body["item"] == item

    resp = await service.client.get(f"{ROOT}/TicketAttachments/{item_id}", headers=headers(service))
    assert base64.b64decode((await resp.json())["items"][0]["data"]) == image


async def test_query_by_get_and_post_and_count(service):
    a = await create(service, "Tickets", 1, file_body("a.txt"))
    b = await create(service, "Tickets", 1, file_body("b.txt"))
    await create(service, "Tasks", 2, file_body("c.txt"))
    search = {"filter": [{"op": "eq", "field": "parentID", "value": 1}]}

    resp = await service.client.get(
        f"{ROOT}/AttachmentInfo/query", params={"search": json.dumps(search)}, headers=headers(service)
    )
    body = await resp.json()
    assert resp.status == 200 and set(body) == {"items", "pageDetails"}
    assert sorted(i["id"] for i in body["items"]) == [a, b]
    for item in body["items"]:
        check_item(item)
    assert body["pageDetails"] == {"count": 2, "requestCount": 500, "prevPageUrl": None, "nextPageUrl": None}
    assert (await query(service, search))["items"] == body["items"]

    for method in ("GET", "POST"):
        kw: dict[str, Any] = {"params": {"search": json.dumps(search)}} if method == "GET" else {"json": search}
        resp = await service.client.request(
            method, f"{ROOT}/AttachmentInfo/query/count", headers=headers(service), **kw
        )
        assert resp.status == 200 and await resp.json() == {"queryCount": 2}

    body = await query(service, {"filter": [{"op": "exist", "field": "id"}], "IncludeFields": ["title"]})
    assert sorted(body["items"], key=lambda i: i["id"]) == [
        {"id": a, "title": "a.txt"}, {"id": b, "title": "b.txt"}, {"id": b + 1, "title": "c.txt"}
    ]  # fmt: skip


async def test_a_ticket_query_returns_its_notes_time_entries_and_nested_attachments(service):
    on_ticket = await create(service, "Tickets", 42, file_body("ticket.txt"))
    on_note = await create(service, "TicketNotes", 9, file_body("note.txt", ticketID=42))
    on_entry = await create(service, "TimeEntries", 5, file_body("time.txt", ticketID=42))
    nested = await create(service, "Tickets", 42, file_body("nested.txt", parentAttachmentID=on_ticket))
    later_on_note = await create(service, "TicketNotes", 9, file_body("again.txt"))  # the note stays placed
    elsewhere = await create(service, "Tickets", 43, file_body("other.txt"))

    everything = sorted([on_ticket, on_note, on_entry, nested, later_on_note])
    assert await ids_of(service, {"op": "eq", "field": "ticketID", "value": 42}) == everything
    assert await ids_of(service, {"op": "eq", "field": "parentID", "value": 42}) == [on_ticket]
    # entityID wins over parentID
    assert (
        await ids_of(
            service, {"op": "eq", "field": "parentID", "value": 43}, {"op": "eq", "field": "ticketID", "value": 42}
        )
        == everything
    )
    assert await ids_of(service, {"op": "eq", "field": "ticketNoteID", "value": 9}) == [on_note, later_on_note]
    assert await ids_of(service, {"op": "eq", "field": "parentAttachmentID", "value": on_ticket}) == [nested]
    assert elsewhere not in await ids_of(service, {"op": "in", "field": "ticketID", "value": [42, 44]})

    resp = await service.client.get(f"{ROOT}/AttachmentInfo/{nested}", headers=headers(service))
    item = (await resp.json())["item"]
    assert (item["parentAttachmentID"], item["parentID"], item["parentType"]) == (on_ticket, on_ticket, 20)
    assert item["ticketID"] == 42
    resp = await service.client.get(f"{ROOT}/AttachmentInfo/{on_note}", headers=headers(service))
    item = (await resp.json())["item"]
    assert (item["ticketNoteID"], item["ticketID"], item["parentID"], item["parentType"]) == (9, 42, 9, 7)

    # the child collection lists the ticket's own attachments
    resp = await service.client.get(f"{ROOT}/Tickets/42/Attachments", headers=headers(service))
    assert [i["id"] for i in (await resp.json())["items"]] == [on_ticket]
    body = await query(service, {"filter": [{"op": "exist", "field": "id"}]}, "TicketAttachments/query")
    assert sorted(i["id"] for i in body["items"]) == [on_ticket, elsewhere]
    resp = await service.client.post(
        f"{ROOT}/TicketNoteAttachments/query/count", json={"filter": [{"op": "exist", "field": "id"}]},
        headers=headers(service),
    )  # fmt: skip
    assert await resp.json() == {"queryCount": 2}


async def test_a_project_attachment_cannot_be_nested(service):
    first = await create(service, "Projects", 3, file_body("plan.txt"))
    resp = await service.client.post(
        f"{ROOT}/Projects/3/Attachments", json=file_body("sub.txt", parentAttachmentID=first), headers=headers(service)
    )
    assert "Project attachments do not support nested attachments" in await refused(resp)
    resp = await service.client.post(
        f"{ROOT}/Tasks/3/Attachments", json=file_body("sub.txt", parentAttachmentID=first), headers=headers(service)
    )
    assert "parentAttachmentID names an attachment that is not on Task 3" in await refused(resp)
    assert len(await service.rows()) == 1


async def test_links_are_stored_not_fetched(service):
    url = await create(
        service,
        "Tickets",
        1,
        {"title": "Docs", "attachmentType": "URL", "fullPath": "https://example.com/a", "publish": 1},
    )
    resp = await service.client.get(f"{ROOT}/Tickets/1/Attachments/{url}", headers=headers(service))
    (item,) = (await resp.json())["items"]
    assert (item["attachmentType"], item["fullPath"], item["data"], item["fileSize"]) == (
        "URL", "https://example.com/a", None, None
    )  # fmt: skip


async def test_updates_are_refused_as_documented(service):
    item_id = await create(service, "Tickets", 1, file_body())
    for method, path in [
        ("PATCH", "AttachmentInfo"),
        ("PUT", f"AttachmentInfo/{item_id}"),
        ("PATCH", "Tickets/1/Attachments"),
        ("PUT", f"Tickets/1/Attachments/{item_id}"),
        ("PATCH", "TicketAttachments"),
    ]:
        resp = await service.client.request(method, f"{ROOT}/{path}", json={"title": "new"}, headers=headers(service))
        assert await refused(resp, 405) == translate.UPDATE_REFUSED
    resp = await service.client.post(f"{ROOT}/AttachmentInfo", json=file_body(), headers=headers(service))
    assert await refused(resp, 405) == translate.QUERY_ONLY
    (row,) = await service.rows()
    assert row["name"] == "notes.txt"


async def test_delete_through_the_child_collection(service):
    item_id = await create(service, "Tickets", 1, file_body())
    resp = await service.client.delete(f"{ROOT}/Tickets/2/Attachments/{item_id}", headers=headers(service))
    await refused(resp, 404)  # not that ticket's
    resp = await service.client.delete(f"{ROOT}/Tickets/1/Attachments/{item_id}", headers=headers(service))
    assert resp.status == 200 and await resp.json() == {"itemId": item_id}
    (row,) = await service.rows()
    assert row["canceled_at"] is not None
    resp = await service.client.get(f"{ROOT}/AttachmentInfo/{item_id}", headers=headers(service))
    await refused(resp, 404)
    resp = await service.client.delete(f"{ROOT}/Tickets/1/Attachments/{item_id}", headers=headers(service))
    await refused(resp, 404)


async def test_file_size_cannot_be_queried(service):
    resp = await service.client.post(
        f"{ROOT}/AttachmentInfo/query",
        json={"filter": [{"op": "gt", "field": "fileSize", "value": 0}]},
        headers=headers(service),
    )
    assert "fileSize cannot be queried" in await refused(resp)


async def test_max_records_pages_with_next_and_previous_urls(service):
    made = [await create(service, "Tasks", 1, file_body(f"{n}.txt")) for n in range(5)]
    search = {"filter": [{"op": "eq", "field": "taskID", "value": 1}], "MaxRecords": 2}
    page = await query(service, search)
    seen, pages = [i["id"] for i in page["items"]], [page]
    while page["pageDetails"]["nextPageUrl"]:
        url = urllib.parse.urlparse(page["pageDetails"]["nextPageUrl"])
        resp = await service.client.get(f"{url.path}?{url.query}", headers=headers(service))
        page = await resp.json()
        pages.append(page)
        seen += [i["id"] for i in page["items"]]
    assert sorted(seen) == made and [p["pageDetails"]["count"] for p in pages] == [2, 2, 1]
    url = urllib.parse.urlparse(pages[2]["pageDetails"]["prevPageUrl"])
    back = await (await service.client.get(f"{url.path}?{url.query}", headers=headers(service))).json()
    assert back["items"] == pages[1]["items"]

    resp = await service.client.post(
        f"{ROOT}/AttachmentInfo/query", json={**search, "MaxRecords": 501}, headers=headers(service)
    )
    assert "MaxRecords must be from 1 to 500" in await refused(resp)


async def test_another_tenants_attachment_is_not_found(service):
    item_id = await create(service, "Tickets", 1, file_body())
    other = service.other_account()
    for method, path in [
        ("GET", f"AttachmentInfo/{item_id}"),
        ("GET", f"Tickets/1/Attachments/{item_id}"),
        ("GET", f"TicketAttachments/{item_id}"),
        ("DELETE", f"Tickets/1/Attachments/{item_id}"),
    ]:
        resp = await service.client.request(method, f"{ROOT}/{path}", headers=headers(service, other))
        await refused(resp, 404)
    assert await query(service, {"filter": [{"op": "exist", "field": "id"}]}, account=other) == {
        "items": [],
        "pageDetails": {"count": 0, "requestCount": 500, "prevPageUrl": None, "nextPageUrl": None},
    }
    resp = await service.client.post(
        f"{ROOT}/Tickets/1/Attachments",
        json=file_body("n.txt", parentAttachmentID=item_id),
        headers=headers(service, other),
    )
    await refused(resp)
    (row,) = await service.rows()
    assert row["canceled_at"] is None


async def test_bad_input_is_a_clear_error_and_stores_nothing(service):
    cases = [
        ({**file_body(), "data": "not base64!"}, "data"),
        (file_body("page.png", b"<html>not a png</html>"), "data"),
        ({**file_body(), "title": "x" * 256}, "title is longer than 255"),
        ({**file_body(), "fullPath": "a.exe"}, "fullPath: the extension .exe is not allowed"),
    ]
    for body, words in cases:
        resp = await service.client.post(f"{ROOT}/Tickets/1/Attachments", json=body, headers=headers(service))
        assert words in await refused(resp, 400)
    resp = await service.client.post(f"{ROOT}/Tickets/x/Attachments", json=file_body(), headers=headers(service))
    await refused(resp, 404)
    resp = await service.client.post(f"{ROOT}/Widgets/1/Attachments", json=file_body(), headers=headers(service))
    await refused(resp, 404)
    resp = await service.client.get(f"{ROOT}/Tickets/1/Attachment", headers=headers(service))
    assert "No resource at" in await refused(resp, 404)
    assert await service.rows() == []
    assert await service.settled_keys() == []


async def test_credentials_are_autotasks_headers(service):
    no_code = {k: v for k, v in headers(service).items() if k != "ApiIntegrationCode"}
    resp = await service.client.get(f"{ROOT}/AttachmentInfo/entityInformation/fields", headers=no_code)
    assert "ApiIntegrationCode" in await refused(resp, 401)
    resp = await service.client.get(
        f"{ROOT}/AttachmentInfo/entityInformation/fields", headers={**headers(service), "Secret": "nope"}
    )
    await refused(resp, 401)
    resp = await service.client.post(
        f"{ROOT}/Tickets/1/Attachments", json=file_body(), headers=headers(service, scope="attachments:read")
    )
    await refused(resp, 403)


async def test_a_file_over_the_per_file_limit_is_refused(service):
    resp = await service.client.post(
        f"{ROOT}/Tickets/1/Attachments", json=file_body("big.txt", b"x" * 7_000_001), headers=headers(service)
    )
    assert "7000000 bytes" in await refused(resp, 413)
    assert await service.rows() == []


async def test_file_and_folder_links_keep_their_paths(service):
    file_link = await create(
        service,
        "Tickets",
        1,
        {"title": "Spec", "attachmentType": "FILE_LINK", "fullPath": "file:///srv/share/spec.docx", "publish": 2},
    )
    folder = await create(
        service,
        "Tickets",
        1,
        {"title": "Share", "attachmentType": "FOLDER_LINK", "fullPath": "\\\\fileserver\\projects\\acme"},
    )
    items = {
        i["id"]: i for i in (await query(service, {"filter": [{"op": "eq", "field": "ticketID", "value": 1}]}))["items"]
    }
    assert (items[file_link]["attachmentType"], items[file_link]["fullPath"], items[file_link]["publish"]) == (
        "FILE_LINK", "file:///srv/share/spec.docx", 2
    )  # fmt: skip
    assert (items[folder]["attachmentType"], items[folder]["fullPath"]) == (
        "FOLDER_LINK",
        "\\\\fileserver\\projects\\acme",
    )
    assert await service.stored_keys() == []  # nothing fetched, nothing stored
    resp = await service.client.post(
        f"{ROOT}/Tickets/1/Attachments",
        json={"title": "x", "attachmentType": "URL", "fullPath": "file:///etc/passwd"},
        headers=headers(service),
    )
    assert "fullPath" in await refused(resp)


async def test_the_byte_window_and_its_lockout_are_per_integration(service):
    chunk = b"x" * 3_400_000
    for n in range(2):
        await create(service, "Tickets", 1, file_body(f"{n}.txt", chunk), code="SYNC-A")
    resp = await service.client.post(
        f"{ROOT}/Tickets/1/Attachments", json=file_body("third.txt", chunk), headers=headers(service, code="SYNC-A")
    )
    await refused(resp, 429)
    assert 290 <= int(resp.headers["Retry-After"]) <= 300
    # locked out: even a small file waits
    resp = await service.client.post(
        f"{ROOT}/Tickets/1/Attachments", json=file_body("small.txt"), headers=headers(service, code="SYNC-A")
    )
    await refused(resp, 429)
    # another integration of the same account has its own window
    await create(service, "Tickets", 1, file_body("other.txt", chunk), code="SYNC-B")
    assert sorted(r["name"] for r in await service.rows()) == ["0.txt", "1.txt", "other.txt"]


@pytest.fixture
def make_key(attachd_keys) -> Callable[..., Awaitable[str]]:
    """``await make_key(account, "--profile", "autotask", ...)``: a key made by `attachd keys create`."""

    async def make(account: str, *options: str) -> str:
        scope = ("--scope", "attachments:read attachments:write")
        return (await attachd_keys("create", "--account", account, *scope, "--name", "psa", *options))[-1]

    return make


async def test_an_autotask_key_works_here_with_its_bindings_only(service, make_key):
    key = await make_key(
        service.account,
        "--actor-type", "Resource", "--actor-id", "29682885",
        "--profile", "autotask", "--bind", "integration=SYNC-A,username=api-user@example.com",
    )  # fmt: skip
    good = {"ApiIntegrationCode": "SYNC-A", "UserName": "API-user@example.com", "Secret": key}
    resp = await service.client.post(f"{ROOT}/Tickets/5/Attachments", json=file_body(), headers=good)
    assert resp.status == 200, await resp.text()
    item_id = (await resp.json())["itemId"]
    item = (await (await service.client.get(f"{ROOT}/AttachmentInfo/{item_id}", headers=good)).json())["item"]
    assert (item["attachedByResourceID"], item["attachedByContactID"], item["creatorType"]) == (29682885, None, 1)

    for changed in ({"ApiIntegrationCode": "SYNC-B"}, {"UserName": "someone@example.com"}):
        resp = await service.client.get(f"{ROOT}/AttachmentInfo/{item_id}", headers={**good, **changed})
        await refused(resp, 401)
    resp = await service.client.get(f"/v1/attachments/{item_id}", headers={"Authorization": f"Bearer {key}"})
    assert resp.status == 401  # a key of this profile is not a native credential

    other = await make_key(service.other_account(), "--profile", "autotask")
    resp = await service.client.get(
        f"{ROOT}/AttachmentInfo/{item_id}", headers={**good, "ApiIntegrationCode": "X", "Secret": other}
    )
    await refused(resp, 404)


async def test_every_operator_runs_on_the_database(service):
    report = await create(service, "Tickets", 1, file_body("report-2024.txt"))
    image = await create(service, "Tickets", 1, file_body("photo.png", png_bytes(100, 80), publish=2))
    link = await create(
        service, "Tasks", 2, {"title": "Wiki", "attachmentType": "URL", "fullPath": "https://wiki.example/x"}
    )
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({"op": "beginsWith", "field": "title", "value": "REPORT"}, [report]),
        ({"op": "contains", "field": "contentType", "value": "png"}, [image]),
        ({"op": "endsWith", "field": "fullPath", "value": "/x"}, [link]),
        ({"op": "gt", "field": "attachDate", "value": "2000-01-01T00:00:00"}, [report, image, link]),
        ({"op": "lt", "field": "attachDate", "value": "2000-01-01"}, []),
        ({"op": "eq", "field": "publish", "value": 2}, [image]),
        ({"op": "eq", "field": "creatorType", "value": 1}, [report, image, link]),
        ({"op": "eq", "field": "creatorType", "value": 2}, []),
        ({"op": "notExist", "field": "attachedByContactID"}, [report, image, link]),
        ({"op": "in", "field": "attachmentType", "value": ["URL", "FILE_LINK"]}, [link]),
        ({"op": "notIn", "field": "id", "value": [report]}, [image, link]),
        ({"op": "noteq", "field": "parentType", "value": 4}, [link]),
        ({"op": "notExist", "field": "parentAttachmentID"}, [report, image, link]),
        (
            {
                "op": "or",
                "items": [{"op": "eq", "field": "taskID", "value": 2}, {"op": "eq", "field": "id", "value": report}],
            },
            [report, link],
        ),
    ]
    for condition, expected in cases:
        assert await ids_of(service, condition) == sorted(expected), condition
