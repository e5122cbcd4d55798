"""The AttachmentInfo-style query and the field catalogue, through the query service."""

from __future__ import annotations

import base64

from tests.test_reads import upload_text


async def query(svc, body: dict, path: str = "/v1/attachments/query"):
    return await svc.client.post(path, json=body, headers=svc.auth())


async def test_filter_tree_with_groups_and_operators(service):
    for name, order in (("alpha.txt", 1), ("beta.txt", 2), ("gamma.txt", 3), ("alphabet.txt", 4)):
        await upload_text(service, name, display_order=order)
    body = {
        "filter": [
            {
                "op": "or",
                "items": [
                    {"field": "name", "op": "beginsWith", "value": "ALPHA"},
                    {
                        "op": "and",
                        "items": [
                            {"field": "display_order", "op": "gte", "value": 3},
                            {"field": "name", "op": "endsWith", "value": "ma.txt"},
                        ],
                    },
                ],
            }
        ]
    }
    resp = await query(service, body)
    assert resp.status == 200, await resp.text()
    names = sorted(a["name"] for a in (await resp.json())["attachments"])
    assert names == ["alpha.txt", "alphabet.txt", "gamma.txt"]
    count = await (await query(service, body, "/v1/attachments/query/count")).json()
    assert count == {"count": 3}


async def test_max_records_pages_with_a_cursor_and_include_fields_projects(service):
    for i in range(5):
        await upload_text(service, f"f{i}.txt")
    seen, cursor = [], None
    while True:
        body = {
            "filter": [{"field": "content_type", "op": "eq", "value": "text/plain"}],
            "max_records": 2,
            "include_fields": ["name", "size"],
        }
        if cursor:
            body["cursor"] = cursor
        page = await (await query(service, body)).json()
        assert all(set(a) == {"id", "name", "size"} for a in page["attachments"])
        seen += [a["name"] for a in page["attachments"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"f{i}.txt" for i in range(5)]


async def test_include_fields_of_the_creator_keep_the_created_by_object(service):
    mine = await upload_text(service, "mine.txt")
    body = {"filter": [{"field": "id", "op": "eq", "value": mine["id"]}], "include_fields": ["created_by_type"]}
    page = await (await query(service, body)).json()
    assert page["attachments"] == [{"id": mine["id"], "created_by": mine["created_by"]}]


async def test_query_is_scoped_to_the_account_and_hides_canceled(service):
    await upload_text(service, "mine.txt")
    gone = await upload_text(service, "gone.txt")
    await service.client.delete(f"/v1/attachments/{gone['id']}", headers=service.auth())
    other = service.other_account()
    await service.client.post(
        "/v1/attachments",
        headers=service.auth(other),
        json={
            "target_type": "Task",
            "target_id": "1",
            "filename": "theirs.txt",
            "data": base64.b64encode(b"x").decode(),
        },
    )
    body = {"filter": [{"field": "target_type", "op": "eq", "value": "Task"}]}
    names = [a["name"] for a in (await (await query(service, body)).json())["attachments"]]
    assert names == ["mine.txt"]
    body = {"filter": [{"field": "canceled_at", "op": "exist"}]}
    names = [a["name"] for a in (await (await query(service, body)).json())["attachments"]]
    assert names == ["gone.txt"]


async def test_bad_queries_are_400s_naming_the_culprit(service):
    cases = [
        ({"filter": []}, "filter"),
        ({"filter": [{"field": "nope", "op": "eq", "value": 1}]}, "filter[0].field"),
        ({"filter": [{"field": "sha256", "op": "eq", "value": "ab"}]}, "filter[0].field"),
        ({"filter": [{"field": "name", "op": "like", "value": "x"}]}, "filter[0].op"),
        ({"filter": [{"field": "size", "op": "gt", "value": "big"}]}, "filter[0].value"),
        ({"filter": [{"field": "name", "op": "eq", "value": "x"}], "max_records": 501}, "max_records"),
        ({"filter": [{"field": "name", "op": "eq", "value": "x"}], "cursor": "???"}, "cursor"),
    ]
    for body, field in cases:
        resp = await query(service, body)
        assert resp.status == 400, body
        assert (await resp.json())["error"]["field"] == field, body


async def test_a_value_can_never_change_the_sql(service):
    await upload_text(service, "safe.txt")
    for value in ("x' OR '1'='1", "%", "_", "\\\\", "'; DROP TABLE attachments; --"):
        body = {"filter": [{"field": "name", "op": "contains", "value": value}]}
        page = await (await query(service, body)).json()
        assert page["attachments"] == [], value
    assert len(await service.rows()) == 1


async def test_field_catalogue_lists_types_lengths_and_picklists(service):
    resp = await service.client.get("/v1/attachments/fields", headers=service.auth())
    assert resp.status == 200
    fields = {f["name"]: f for f in (await resp.json())["fields"]}
    assert fields["name"]["max_length"] == 255 and fields["name"]["updatable"] is True
    assert fields["content_type"]["max_length"] == 100
    assert fields["sha256"]["queryable"] is False
    values = {v["value"]: v for v in fields["attachment_type"]["picklist_values"]}
    assert values["FILE_ATTACHMENT"]["label"] == "Attachment" and values["FILE_ATTACHMENT"]["is_default"]
    assert [v["value"] for v in fields["status"]["picklist_values"]] == ["approved", "pending", "required"]


async def test_an_entity_named_outright_wins_over_a_parent(service):
    """AttachmentInfo: "if your query supplies both an entityID and a parentID, the entityID will take
    precedence", so a parent that does not hold the entity changes nothing, on every read route."""
    on_note = await upload_text(service, "on-note.txt", target_id="9")
    await upload_text(service, "elsewhere.txt", target_id="10")
    body = {
        "filter": [
            {"field": "target_id", "op": "eq", "value": "9"},
            {"field": "ancestor", "op": "eq", "value": "Ticket:999"},
        ]
    }
    found = await (await query(service, body)).json()
    assert [a["id"] for a in found["attachments"]] == [on_note["id"]]
    assert await (await query(service, body, "/v1/attachments/query/count")).json() == {"count": 1}
    listed = await (
        await service.client.get(
            "/v1/attachments?target_type=Task&target_id=9&ancestor=Ticket:999", headers=service.auth()
        )
    ).json()
    assert [a["id"] for a in listed["attachments"]] == [on_note["id"]]
    # Inside an "or" group the ancestor is not a second way of naming the entity: it stays a condition.
    grouped = {"filter": [{"op": "or", "items": body["filter"]}]}
    assert await (await query(service, grouped, "/v1/attachments/query/count")).json() == {"count": 1}
