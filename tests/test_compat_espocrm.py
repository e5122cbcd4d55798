"""The EspoCRM profile: the seed's requests as written (base URL and credential replaced), its rules, and
the pure translation both ways."""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

import pytest
import pyvips
from aiohttp.test_utils import TestClient, TestServer

from services.compat.app import create_app as compat_app
from services.compat.espocrm import translate
from services.compat.espocrm.credentials import credential
from services.core.errors import ApiError
from tests.conftest import jpeg_bytes

API = "/compat/espocrm/api/v1"
ESPO_ID = re.compile(r"^[0-9a-f]{17}$")
DATETIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")

# The attributes EspoCRM answers an upload with (its Attachment entity), and their JSON types.
ATTACHMENT_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "name": (str,),
    "deleted": (bool,),
    "type": (str, type(None)),
    "size": (int,),
    "parentId": (str, type(None)),
    "parentType": (str, type(None)),
    "relatedId": (str, type(None)),
    "relatedType": (str, type(None)),
    "sourceId": (type(None),),
    "field": (str,),
    "isBeingUploaded": (bool,),
    "role": (str,),
    "storage": (type(None),),
    "storageFilePath": (type(None),),
    "global": (bool,),
    "createdAt": (str,),
    "createdById": (str, type(None)),
}


def data_uri(content: bytes, media_type: str = "text/plain") -> str:
    return f"data:{media_type};base64,{base64.b64encode(content).decode()}"


def key_auth(svc, **kw: Any) -> dict[str, str]:
    """EspoCRM's API-key header, carrying an attachd credential."""
    return {"X-Api-Key": svc.token(**kw)}


def assert_attachment(body: dict[str, Any]) -> None:
    assert set(body) == set(ATTACHMENT_TYPES)
    for key, types in ATTACHMENT_TYPES.items():
        assert isinstance(body[key], types), (key, body[key])
    assert DATETIME.match(body["createdAt"])
    uuid.UUID(body["id"])


async def upload(svc, body: dict[str, Any], **kw: Any):
    return await svc.client.post(f"{API}/Attachment", json=body, headers=key_auth(svc, **kw))


async def uploaded(svc, content: bytes, name: str = "test.txt", **placement: str) -> dict[str, Any]:
    placement = placement or {"parentType": "Note", "field": "attachments"}
    body = {"name": name, "type": "text/plain", "role": "Attachment", **placement, "file": data_uri(content)}
    response = await upload(svc, body)
    assert response.status == 200, await response.text()
    return await response.json()


# -- the seed's requests, as written ---------------------------------------------------------------------


async def test_file_field_example_upload_then_document_create_and_update(service):
    svc = service
    # Step 1. Upload attachment (the File field example)
    response = await upload(
        svc,
        {
            "name": "test.txt",
            "type": "text/plain",
            "role": "Attachment",
            "relatedType": "Document",
            "field": "file",
            "file": data_uri(b"first contents\n"),
        },
    )
    assert response.status == 200
    first = await response.json()
    assert_attachment(first)
    assert first["name"] == "test.txt"
    assert (first["relatedType"], first["relatedId"], first["parentType"], first["field"]) == (
        "Document",
        None,
        None,
        "file",
    )
    assert (first["type"], first["size"], first["role"], first["deleted"]) == ("text/plain", 15, "Attachment", False)
    row = (await svc.rows())[0]
    assert (str(row["id"]), row["target_id"], row["parent_type"], row["field"]) == (
        first["id"],
        None,
        "Document",
        "file",
    )

    # Step 2. Create: POST Document
    response = await svc.client.post(
        f"{API}/Document", json={"name": "document-name", "fileId": first["id"]}, headers=key_auth(svc)
    )
    assert response.status == 200
    document = await response.json()
    assert set(document) == {"id", "name", "fileId", "fileName"}
    assert ESPO_ID.match(document["id"])
    assert document == {"id": document["id"], "name": "document-name", "fileId": first["id"], "fileName": "test.txt"}
    row = (await svc.rows())[0]
    assert (row["target_type"], row["target_id"], row["field"]) == ("Document", document["id"], "file")

    # Update: PUT Document/{document-id} with a new file replaces the old one
    second = await uploaded(svc, b"second contents\n", "v2.txt", relatedType="Document", field="file")
    response = await svc.client.put(
        f"{API}/Document/{document['id']}", json={"fileId": second["id"]}, headers=key_auth(svc)
    )
    assert response.status == 200
    assert await response.json() == {"id": document["id"], "fileId": second["id"], "fileName": "v2.txt"}
    rows = {str(r["id"]): r for r in await svc.rows()}
    assert (rows[second["id"]]["target_id"], rows[second["id"]]["field"]) == (document["id"], "file")
    unlinked = rows[first["id"]]  # off the record, not deleted
    assert (unlinked["target_id"], unlinked["canceled_at"], unlinked["unlinked_at"] is not None) == (None, None, True)

    response = await svc.client.get(f"{API}/Attachment/file/{second['id']}", headers=key_auth(svc))
    assert response.status == 200
    assert await response.read() == b"second contents\n"


async def test_attachment_multiple_example_upload_then_note_create_and_update(service):
    svc = service
    # Step 1. Upload attachment (the Attachment-Multiple example)
    response = await upload(
        svc,
        {
            "name": "test.txt",
            "type": "text/plain",
            "role": "Attachment",
            "parentType": "Note",
            "field": "attachments",
            "file": data_uri(b"note contents"),
        },
    )
    assert response.status == 200
    first = await response.json()
    assert_attachment(first)
    assert (first["parentType"], first["parentId"], first["relatedType"], first["field"]) == (
        "Note",
        None,
        None,
        "attachments",
    )

    # Step 2. Create: POST Note, with the seed's own spelling of attachmentsIds
    response = await svc.client.post(
        f"{API}/Note",
        json={"post": "Some text", "type": "Post", "attachmnetsIds": [first["id"]]},
        headers=key_auth(svc),
    )
    assert response.status == 200
    note = await response.json()
    assert set(note) == {"id", "post", "type", "attachmentsIds", "attachmentsNames", "attachmentsTypes"}
    assert ESPO_ID.match(note["id"])
    assert (note["post"], note["type"]) == ("Some text", "Post")
    assert note["attachmentsIds"] == [first["id"]]
    assert note["attachmentsNames"] == {first["id"]: "test.txt"}
    assert note["attachmentsTypes"] == {first["id"]: "text/plain"}
    row = (await svc.rows())[0]
    assert (row["target_type"], row["target_id"], row["field"]) == ("Note", note["id"], "attachments")

    # Update: PUT Note/{id-of-note-record}, as written: the list replaces the one before
    second = await uploaded(svc, b"another")
    response = await svc.client.put(
        f"{API}/Note/{note['id']}", json={"attmnetsIds": [], "attachmnetsIds": [second["id"]]}, headers=key_auth(svc)
    )
    assert response.status == 200
    updated = await response.json()
    assert updated["attachmentsIds"] == [second["id"]]
    assert updated["attmnetsIds"] == []  # not an attribute attachd knows: answered as given
    rows = {str(r["id"]): r for r in await svc.rows()}
    assert rows[second["id"]]["target_id"] == note["id"]
    unlinked = rows[first["id"]]  # off the record, not deleted
    assert (unlinked["target_id"], unlinked["canceled_at"], unlinked["unlinked_at"] is not None) == (None, None, True)

    # Downloading: GET Attachment/file/{id}
    response = await svc.client.get(f"{API}/Attachment/file/{second['id']}", headers=key_auth(svc))
    assert response.status == 200
    assert await response.read() == b"another"


# -- the pure translation --------------------------------------------------------------------------------


def test_upload_body_is_the_native_create_of_an_upload_waiting_for_its_record():
    native = translate.upload_body(
        {
            "name": "test.txt",
            "type": "text/plain",
            "role": "Attachment",
            "relatedType": "Document",
            "relatedId": "ignored",
            "parentId": "ignored too",
            "field": "file",
            "file": "data:text/plain;base64,aGk=",
            "somethingElse": 1,
        }
    )
    assert native == {
        "name": "test.txt",
        "filename": "test.txt",
        "parent_type": "Document",
        "field": "file",
        "data": "data:text/plain;base64,aGk=",
        "content_type": "text/plain",
    }
    # parentType wins over relatedType; role defaults to Attachment
    native = translate.upload_body(
        {"name": "a", "parentType": "Note", "relatedType": "Document", "field": "attachments", "file": "aGk="}
    )
    assert native["parent_type"] == "Note" and "content_type" not in native


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"name": "a", "parentType": "Note", "field": "attachments"}, "file", "No file contents."),
        ({"name": "a", "parentType": "Note", "field": "attachments", "file": 5}, "file", "Non-string file contents."),
        (
            {"name": "a", "parentType": "Note", "field": "attachments", "file": "aGk=", "role": "Export File"},
            "role",
            "Not supported attachment 'role'.",
        ),
        (
            {"name": "a", "field": "attachments", "file": "aGk="},
            "parentType",
            "Params 'field' and 'parentType' not passed along with 'file'.",
        ),
        (
            {"name": "a", "parentType": "Note", "file": "aGk="},
            "field",
            "Params 'field' and 'parentType' not passed along with 'file'.",
        ),
        (
            {"name": "a", "parentType": "Note", "field": "photos", "file": "aGk="},
            "field",
            "Field 'photos' does not exist.",
        ),
        (
            {"name": "a", "parentType": "Note", "field": "attachments", "file": "aGk=", "role": "Inline Attachment"},
            "role",
            "Field type 'attachmentMultiple' is not allowed for Inline Attachment.",
        ),
        ({"parentType": "Note", "field": "attachments", "file": "aGk="}, "name", "name is required"),
        ({"name": "a" * 256, "parentType": "Note", "field": "attachments", "file": "aGk="}, "name", None),
        ({"name": "a", "type": 7, "parentType": "Note", "field": "attachments", "file": "aGk="}, "type", None),
        (
            {"name": "a", "parentType": "Note", "field": "attachments", "isBeingUploaded": True},
            "isBeingUploaded",
            None,
        ),
    ],
)
def test_upload_body_refusals_name_the_attribute(body, field, message):
    with pytest.raises(ApiError) as caught:
        translate.upload_body(body)
    assert caught.value.status == 400 and caught.value.field == field
    if message is not None:
        assert caught.value.message == message


def test_record_write_reads_link_attributes_and_answers_the_rest_as_given():
    write = translate.record_write(
        "Note", {"post": "x", "attachmnetsIds": ["a", "b", "a"], "attachmentsNames": {"a": "n"}, "id": "forged"}
    )
    assert write.links == {"attachments": ["a", "b"]}
    assert write.keys == {"attachments": "attachmnetsIds"}
    assert write.given == {"post": "x"}
    assert translate.record_write("Document", {"fileId": None, "name": "d"}).links == {"file": []}
    assert translate.record_write("Document", {"fileId": "f"}).links == {"file": ["f"]}
    assert translate.record_write("Note", {"post": "no attachments"}).links == {}


@pytest.mark.parametrize(
    ("entity_type", "body", "field"),
    [
        ("Note", {"attachmentsIds": "one"}, "attachmentsIds"),
        ("Note", {"attachmentsIds": [1]}, "attachmentsIds[0]"),
        ("Note", {"attachmentsIds": [], "attachmnetsIds": []}, "attachmnetsIds"),
        ("Document", {"fileId": ["a"]}, "fileId"),
        ("Note", ["not", "an", "object"], None),
    ],
)
def test_record_write_refusals(entity_type, body, field):
    with pytest.raises(ApiError) as caught:
        translate.record_write(entity_type, body)
    assert caught.value.status == 400 and caught.value.field == field


def _row(**values: Any) -> dict[str, Any]:
    import datetime as dt

    base = {
        "id": uuid.UUID("01234567-89ab-7def-8123-456789abcdef"),
        "name": "a.txt",
        "canceled_at": None,
        "content_type": "text/plain",
        "size": 3,
        "target_type": None,
        "target_id": None,
        "parent_type": "Note",
        "field": "attachments",
        "created_at": dt.datetime(2026, 12, 2, 9, 5, 7, 123456, tzinfo=dt.UTC),
        "created_by_id": "user-1",
    }
    return {**base, **values}


def test_attachment_attributes_place_a_file_field_as_related_and_a_list_as_parent():
    waiting = translate.attachment_attributes(_row())
    assert (waiting["parentType"], waiting["parentId"], waiting["relatedType"]) == ("Note", None, None)
    assert waiting["createdAt"] == "2026-12-02 09:05:07"
    assert waiting["id"] == "01234567-89ab-7def-8123-456789abcdef"
    on_note = translate.attachment_attributes(_row(target_type="Note", target_id="n1"))
    assert (on_note["parentType"], on_note["parentId"], on_note["relatedId"]) == ("Note", "n1", None)
    on_document = translate.attachment_attributes(
        _row(target_type="Document", target_id="d1", parent_type="Document", field="file")
    )
    assert (on_document["relatedType"], on_document["relatedId"], on_document["parentType"]) == (
        "Document",
        "d1",
        None,
    )
    assert translate.attachment_attributes(_row(canceled_at=_row()["created_at"]))["deleted"] is True


def test_record_attributes_derive_names_and_types_from_the_ids():
    a, b = _row(), _row(id=uuid.UUID(int=7), name="b.png", content_type="image/png")
    note = translate.record_attributes("Note", "n1", {"post": "p"}, {"attachments": [a, b]})
    assert note == {
        "id": "n1",
        "post": "p",
        "attachmentsIds": [str(a["id"]), str(b["id"])],
        "attachmentsNames": {str(a["id"]): "a.txt", str(b["id"]): "b.png"},
        "attachmentsTypes": {str(a["id"]): "text/plain", str(b["id"]): "image/png"},
    }
    assert translate.record_attributes("Document", "d1", {}, {}) == {"id": "d1", "fileId": None, "fileName": None}


def test_new_record_id_is_espocrm_s_uniqid_and_four_random_hex_digits():
    assert translate.new_record_id(0x5F5E1000 + 0.5, "abcd") == "5f5e1000" + "7a120" + "abcd"
    ident = translate.new_record_id(1764666307.25, "0f0f")
    assert ident == f"{1764666307:08x}{250000:05x}0f0f" and len(ident) == 17
    assert ESPO_ID.match(translate.new_record_id())
    assert translate.new_record_id() != translate.new_record_id()


def test_errors_carry_the_reason_header_and_a_validation_body_for_a_field():
    error = translate.espo_error(ApiError("missing_field", "name is required", field="name"))
    assert (error.status, error.reason) == (400, "name is required")
    assert error.body == {
        "messageTranslation": {
            "label": "validationFailure",
            "scope": None,
            "data": {"field": "name", "type": "required"},
        }
    }
    error = translate.espo_error(ApiError("invalid_base64", "bad base64", field="data"))
    assert error.body is not None and error.body["messageTranslation"]["data"] == {"field": "file", "type": "valid"}
    error = translate.espo_error(ApiError("size_exceeded", "too big", field="data", status=413))
    assert error.status == 403
    error = translate.espo_error(ApiError("not_found", "attachment not found", status=404))
    assert (error.status, error.body) == (404, None)
    assert translate.header_text("caf\u00e9\r\nx") == "caf   x"


def test_credentials_where_espocrm_clients_put_them():
    espo = base64.b64encode(b"admin:secret-1").decode()
    assert credential({"X-Api-Key": "k1"}) == "k1"
    assert credential({"Espo-Authorization": espo}) == "secret-1"
    assert credential({"Authorization": f"Basic {espo}"}) == "secret-1"
    assert credential({"Authorization": "Bearer t1"}) == "t1"
    assert credential({"X-Api-Key": "k1", "Authorization": "Bearer t1"}) == "k1"
    assert credential({"Espo-Authorization": "not base64!"}) is None
    assert credential({}) is None


# -- the rules, end to end -------------------------------------------------------------------------------


async def test_real_image_round_trips_byte_for_byte_and_has_its_thumbnails(service):
    svc = service
    photo = jpeg_bytes(1200, 800)
    body = {"name": "site.jpg", "type": "image/jpeg", "parentType": "Note", "field": "attachments"}
    response = await upload(svc, {**body, "file": data_uri(photo, "image/jpeg")})
    assert response.status == 200
    attachment = await response.json()
    assert (attachment["type"], attachment["size"]) == ("image/jpeg", len(photo))

    response = await svc.client.get(f"{API}/Attachment/file/{attachment['id']}", headers=key_auth(svc))
    assert response.status == 200
    assert await response.read() == photo
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.headers["Content-Disposition"].startswith("attachment")
    # The same id reads natively, with the 72x48 and 161x107 thumbnails.
    for variant, size in (("thumbnail", (72, 48)), ("small", (161, 107))):
        thumb = await svc.client.get(f"/v1/attachments/{attachment['id']}/file/{variant}", headers=svc.auth())
        assert thumb.status == 200
        image = pyvips.Image.new_from_buffer(await thumb.read(), "")
        assert (image.width, image.height) == size


async def test_parent_id_in_an_upload_is_ignored(service):
    svc = service
    attachment = await uploaded(svc, b"x", parentType="Note", field="attachments", parentId="5f5e1000abcd0123f")
    assert attachment["parentId"] is None
    row = (await svc.rows())[0]
    assert (row["target_type"], row["target_id"], row["parent_type"]) == (None, None, "Note")


async def test_a_list_replaces_and_the_unlisted_can_be_linked_again(service):
    svc = service
    a, b = await uploaded(svc, b"a", "a.txt"), await uploaded(svc, b"b", "b.txt")
    response = await svc.client.post(f"{API}/Note", json={"attachmentsIds": [a["id"], b["id"]]}, headers=key_auth(svc))
    note = await response.json()
    assert note["attachmentsIds"] == [a["id"], b["id"]]

    response = await svc.client.put(
        f"{API}/Note/{note['id']}", json={"attachmentsIds": [b["id"]]}, headers=key_auth(svc)
    )
    assert (await response.json())["attachmentsIds"] == [b["id"]]
    # unlinked, not destroyed: its bytes are still there and it can be linked again
    response = await svc.client.get(f"{API}/Attachment/file/{a['id']}", headers=key_auth(svc))
    assert (response.status, await response.read()) == (200, b"a")
    response = await svc.client.put(
        f"{API}/Note/{note['id']}", json={"attachmentsIds": [b["id"], a["id"]]}, headers=key_auth(svc)
    )
    assert response.status == 200, response.headers.get("X-Status-Reason")
    assert (await response.json())["attachmentsIds"] == [b["id"], a["id"]]

    # a write that does not name the field leaves it as it is
    response = await svc.client.put(f"{API}/Note/{note['id']}", json={"post": "edited"}, headers=key_auth(svc))
    assert await response.json() == {
        "id": note["id"],
        "post": "edited",
        "attachmentsIds": [a["id"], b["id"]],
        "attachmentsNames": {a["id"]: "a.txt", b["id"]: "b.txt"},
        "attachmentsTypes": {a["id"]: "text/plain", b["id"]: "text/plain"},
    }
    # an empty list unlinks them all
    response = await svc.client.put(f"{API}/Note/{note['id']}", json={"attachmentsIds": []}, headers=key_auth(svc))
    assert (await response.json())["attachmentsIds"] == []


async def test_another_tenants_ids_are_404_and_its_uploads_cannot_be_linked(service):
    svc = service
    mine = await uploaded(svc, b"mine")
    response = await svc.client.post(f"{API}/Note", json={"attachmentsIds": [mine["id"]]}, headers=key_auth(svc))
    note = await response.json()
    other = svc.other_account()
    theirs = key_auth(svc, account=other)

    for path in (f"Attachment/file/{mine['id']}", f"Attachment/{mine['id']}"):
        response = await svc.client.get(f"{API}/{path}", headers=theirs)
        assert (response.status, await response.read()) == (404, b"")
        assert response.headers["X-Status-Reason"] == "attachment not found"
    response = await svc.client.get(f"{API}/Attachment/{mine['id']}", headers=key_auth(svc))
    assert response.status == 200
    read = await response.json()
    assert_attachment(read)
    assert (read["id"], read["parentType"], read["parentId"], read["field"]) == (
        mine["id"],
        "Note",
        note["id"],
        "attachments",
    )
    response = await svc.client.put(f"{API}/Note/{note['id']}", json={"attachmentsIds": []}, headers=theirs)
    assert response.status == 404
    response = await svc.client.post(f"{API}/Note", json={"attachmentsIds": [mine["id"]]}, headers=theirs)
    assert response.status == 400
    assert await response.json() == {
        "messageTranslation": {
            "label": "validationFailure",
            "scope": None,
            "data": {"field": "attachmentsIds[0]", "type": "valid"},
        }
    }
    assert await svc.pool.fetchval("SELECT count(*) FROM targets WHERE account_id = $1", other) == 0
    row = (await svc.rows())[0]
    assert (row["target_id"], row["canceled_at"]) == (note["id"], None)


async def test_unknown_records_and_ids_are_404(service):
    svc = service
    for path in ("Note/5f5e1000abcd0123f", "Document/nope"):
        response = await svc.client.put(f"{API}/{path}", json={"name": "x"}, headers=key_auth(svc))
        assert response.status == 404
        assert response.headers["X-Status-Reason"].endswith("not found")
    for ident in ("not-a-uuid", str(uuid.uuid4())):
        response = await svc.client.get(f"{API}/Attachment/file/{ident}", headers=key_auth(svc))
        assert response.status == 404


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"name": "a.txt", "parentType": "Note", "field": "attachments"}, "file", "No file contents."),
        (
            {"name": "a.txt", "parentType": "Note", "field": "attachments", "file": "data:text/plain;base64,@@@"},
            "file",
            None,
        ),
        ({"parentType": "Note", "field": "attachments", "file": data_uri(b"x")}, "name", "name is required"),
        ({"name": "a.txt", "file": data_uri(b"x")}, "parentType", None),
    ],
)
async def test_bad_uploads_are_espocrm_errors_and_store_nothing(service, body, field, reason):
    svc = service
    response = await upload(svc, body)
    assert response.status == 400
    if reason is not None:
        assert response.headers["X-Status-Reason"] == reason
    assert (await response.json())["messageTranslation"]["data"]["field"] == field
    assert await svc.rows() == []
    assert await svc.settled_keys() == []


async def test_a_body_that_is_not_json_is_a_400(service):
    svc = service
    headers = {**key_auth(svc), "Content-Type": "text/plain"}
    response = await svc.client.post(f"{API}/Attachment", data=b"hello", headers=headers)
    assert response.status == 400 and response.headers["X-Status-Reason"]
    response = await svc.client.post(
        f"{API}/Attachment", data=b"{not json", headers={**key_auth(svc), "Content-Type": "application/json"}
    )
    assert response.status == 400
    assert await svc.rows() == []


async def test_bad_links_are_refused_and_change_nothing(service):
    svc = service
    a = await uploaded(svc, b"a")
    on_document = await uploaded(svc, b"d", relatedType="Document", field="file")
    response = await svc.client.post(f"{API}/Note", json={"attachmentsIds": [a["id"]]}, headers=key_auth(svc))
    note = await response.json()

    for ids, index in (([a["id"], "no-such-id"], 1), ([str(uuid.uuid4())], 0), ([on_document["id"]], 0)):
        response = await svc.client.put(f"{API}/Note/{note['id']}", json={"attachmentsIds": ids}, headers=key_auth(svc))
        assert response.status == 400, ids
        body = await response.json()
        assert body["messageTranslation"]["data"]["field"] == f"attachmentsIds[{index}]"
    rows = {str(r["id"]): r for r in await svc.rows()}
    assert rows[a["id"]]["target_id"] == note["id"] and rows[a["id"]]["canceled_at"] is None
    assert rows[on_document["id"]]["target_id"] is None

    before = await svc.pool.fetchval("SELECT count(*) FROM targets WHERE account_id = $1", svc.account)
    response = await svc.client.post(f"{API}/Document", json={"fileId": a["id"]}, headers=key_auth(svc))
    assert response.status == 400
    assert await svc.pool.fetchval("SELECT count(*) FROM targets WHERE account_id = $1", svc.account) == before


async def test_credentials_as_espocrm_clients_send_them(service):
    svc = service
    body = {"name": "a.txt", "parentType": "Note", "field": "attachments", "file": data_uri(b"x")}
    espo = base64.b64encode(f"api-user:{svc.token()}".encode()).decode()
    for headers in ({"Espo-Authorization": espo}, {"Authorization": f"Basic {espo}"}, svc.auth()):
        response = await svc.client.post(f"{API}/Attachment", json=body, headers=headers)
        assert response.status == 200, headers

    response = await svc.client.post(f"{API}/Attachment", json=body)
    assert (response.status, await response.read()) == (401, b"")
    assert response.headers["X-Status-Reason"]
    response = await svc.client.post(f"{API}/Attachment", json=body, headers={"X-Api-Key": "not-a-key"})
    assert response.status == 401
    response = await upload(svc, body, scope="attachments:read")
    assert response.status == 403
    assert len(await svc.rows()) == 3


async def test_a_file_over_the_limit_is_espocrm_s_forbidden(make_service):
    async with make_service(max_file_bytes=10) as svc:
        response = await upload(
            svc, {"name": "big.txt", "parentType": "Note", "field": "attachments", "file": data_uri(b"x" * 11)}
        )
        assert response.status == 403
        assert "10" in response.headers["X-Status-Reason"]
        assert json.loads(await response.text())["messageTranslation"]["data"]["field"] == "file"
        assert await svc.rows() == []


async def test_a_record_known_by_its_native_attachments_stays_known_with_none(service):
    svc = service
    native = {"target_type": "Note", "target_id": "n7", "field": "attachments", "filename": "x.txt", "data": "eA=="}
    response = await svc.upload_json(native)
    assert response.status == 201
    ident = (await response.json())["id"]
    response = await svc.client.put(f"{API}/Note/n7", json={"post": "p"}, headers=key_auth(svc))
    assert (await response.json())["attachmentsIds"] == [ident]
    for _ in range(2):
        response = await svc.client.put(f"{API}/Note/n7", json={"attachmentsIds": []}, headers=key_auth(svc))
        assert response.status == 200
        assert (await response.json())["attachmentsIds"] == []


async def test_an_idempotency_key_on_an_upload_replays_it_and_a_record_write_ignores_it(service):
    svc = service
    body = {"name": "a.txt", "parentType": "Note", "field": "attachments", "file": data_uri(b"once")}
    headers = {**key_auth(svc), "Idempotency-Key": "k-1"}
    first = await (await svc.client.post(f"{API}/Attachment", json=body, headers=headers)).json()
    again = await (await svc.client.post(f"{API}/Attachment", json=body, headers=headers)).json()
    assert again["id"] == first["id"] and len(await svc.rows()) == 1

    response = await svc.client.post(f"{API}/Note", json={"attachmentsIds": [first["id"]]}, headers=headers)
    assert response.status == 200
    assert (await response.json())["attachmentsIds"] == [first["id"]]


# -- real API keys, made as a user makes them ----------------------------------------------------------


async def test_an_espocrm_api_key_runs_the_two_step_flow_until_it_is_revoked(service, attachd_keys):
    svc = service
    lines = await attachd_keys("create", "--account", svc.account, "--profile", "espocrm", "--name", "crm-sync")
    headers = {"X-Api-Key": lines[-1]}
    body = {"name": "k.txt", "type": "text/plain", "parentType": "Note", "field": "attachments"}
    response = await svc.client.post(f"{API}/Attachment", json={**body, "file": data_uri(b"by key")}, headers=headers)
    assert response.status == 200
    attachment = await response.json()
    assert attachment["createdById"] == "crm-sync"
    response = await svc.client.post(f"{API}/Note", json={"attachmentsIds": [attachment["id"]]}, headers=headers)
    assert (await response.json())["attachmentsIds"] == [attachment["id"]]
    response = await svc.client.get(f"{API}/Attachment/file/{attachment['id']}", headers=headers)
    assert await response.read() == b"by key"

    # limited to this profile: the native API refuses it
    native = {"Authorization": f"Bearer {lines[-1]}"}
    response = await svc.client.get(f"/v1/attachments/{attachment['id']}", headers=native)
    assert response.status == 401

    (listed,) = json.loads("\n".join(await attachd_keys("list", "--account", svc.account, "--json")))
    await attachd_keys("revoke", str(listed["id"]))
    response = await svc.client.get(f"{API}/Attachment/file/{attachment['id']}", headers=headers)
    assert (response.status, await response.read()) == (401, b"")
    assert response.headers["X-Status-Reason"] == "the API key has been revoked"


async def test_a_key_of_another_profile_or_read_only_is_refused(service, attachd_keys):
    svc = service
    toggl = (await attachd_keys("create", "--account", svc.account, "--profile", "toggl", "--bind", "org=1"))[-1]
    reader = (await attachd_keys("create", "--account", svc.account, "--scope", "attachments:read"))[-1]
    body = {"name": "a.txt", "parentType": "Note", "field": "attachments", "file": data_uri(b"x")}
    response = await svc.client.post(f"{API}/Attachment", json=body, headers={"X-Api-Key": toggl})
    assert response.status == 401
    assert response.headers["X-Status-Reason"] == "this API key is limited to the toggl compatibility profile"
    response = await svc.client.post(f"{API}/Attachment", json=body, headers={"X-Api-Key": reader})
    assert (response.status, await response.read()) == (403, b"")
    espo = base64.b64encode(f"admin:{reader}".encode()).decode()
    response = await svc.client.get(f"{API}/Attachment/file/{uuid.uuid4()}", headers={"Espo-Authorization": espo})
    assert response.status == 404  # let in (a read), and nothing there
    assert await svc.rows() == []


async def test_a_name_that_lies_about_the_bytes_is_refused_by_the_native_checks(service):
    svc = service
    pdf = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"
    body = {"name": "test.txt", "type": "text/plain", "parentType": "Note", "field": "attachments"}
    response = await upload(svc, {**body, "file": data_uri(pdf)})
    assert response.status == 400
    assert response.headers["X-Status-Reason"] == "file content is application/pdf but the name ends in .txt"
    assert (await response.json())["messageTranslation"]["data"] == {"field": "file", "type": "valid"}
    assert await svc.rows() == []
    assert await svc.settled_keys() == []


async def test_the_standalone_compat_app_serves_the_profile(service):
    """`attachd compat` runs the profiles on their own: the same flow through that app."""
    svc = service
    client = TestClient(TestServer(compat_app(svc.settings)))
    await client.start_server()
    try:
        body = {"name": "c.txt", "parentType": "Note", "field": "attachments", "file": data_uri(b"compat app")}
        response = await client.post(f"{API}/Attachment", json=body, headers=key_auth(svc))
        assert response.status == 200
        ident = (await response.json())["id"]
        response = await client.post(f"{API}/Note", json={"attachmentsIds": [ident]}, headers=key_auth(svc))
        assert (await response.json())["attachmentsIds"] == [ident]
        response = await client.get(f"{API}/Attachment/file/{ident}", headers=key_auth(svc))
        assert await response.read() == b"compat app"
    finally:
        await client.close()
