"""Versions and nesting (ProjectCor, Autotask), the target hierarchy and descendants (Autotask)."""

from __future__ import annotations

import base64

import pytest


async def upload(svc, filename: str, **fields) -> dict:
    body = {"filename": filename, "data": base64.b64encode(filename.encode()).decode(), **fields}
    body.setdefault("target_type", "Ticket")
    body.setdefault("target_id", "42")
    body = {k: v for k, v in body.items() if v is not None}
    resp = await svc.upload_json(body)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def names(svc, query: str) -> list[str]:
    resp = await svc.client.get(f"/v1/attachments?{query}&order_by=name", headers=svc.auth())
    assert resp.status == 200, await resp.text()
    return [a["filename"] for a in (await resp.json())["attachments"]]


async def test_version_of_makes_the_next_version(service):
    v1 = await upload(service, "plan-v1.txt")
    v2 = await upload(service, "plan-v2.txt", version_of=v1["id"])
    # by integer id, and with the target left out: it is inherited
    v3 = await upload(service, "plan-v3.txt", version_of=v2["seq"], target_type=None, target_id=None)
    assert (v1["version"], v2["version"], v3["version"]) == (1, 2, 3)
    assert (v3["version_of"], v3["parent_attachment_id"]) == (v2["id"], None)
    assert (v3["target_type"], v3["target_id"], v3["ancestors"]) == ("Ticket", "42", ["Ticket:42"])
    assert await names(service, "target_type=Ticket&target_id=42") == ["plan-v3.txt"]
    assert await names(service, "target_type=Ticket&target_id=42&versions=all") == [
        "plan-v1.txt",
        "plan-v2.txt",
        "plan-v3.txt",
    ]
    # Deleting the latest brings back the one before it.
    assert (await service.client.delete(f"/v1/attachments/{v3['id']}", headers=service.auth())).status == 204
    assert await names(service, "target_type=Ticket&target_id=42") == ["plan-v2.txt"]


async def test_a_version_of_a_nested_attachment_stays_nested(service):
    parent = await upload(service, "contract.txt")
    child = await upload(service, "sig-v1.txt", target_type=None, target_id=None, parent_attachment_id=parent["id"])
    again = await upload(service, "sig-v2.txt", target_type=None, target_id=None, version_of=child["id"])
    assert (again["target_type"], again["target_id"]) == ("Attachment", parent["id"])
    assert (again["parent_attachment_id"], again["version_of"], again["version"]) == (parent["id"], child["id"], 2)
    assert again["ancestors"] == [f"Attachment:{parent['id']}", "Ticket:42"]
    assert await names(service, "target_type=Ticket&target_id=42&descendants=true") == ["contract.txt", "sig-v2.txt"]


async def test_nested_attachments_hang_under_their_parent(service):
    parent = await upload(service, "contract.txt")
    child = await upload(service, "signature.txt", target_type=None, target_id=None, parent_attachment_id=parent["id"])
    assert (child["target_type"], child["target_id"]) == ("Attachment", parent["id"])
    assert (child["version"], child["version_of"]) == (1, None)
    assert child["ancestors"] == [f"Attachment:{parent['id']}", "Ticket:42"]
    assert await names(service, "target_type=Ticket&target_id=42&descendants=true") == ["contract.txt", "signature.txt"]


async def test_a_nested_attachment_made_through_its_record_sits_under_the_parent(service):
    """Autotask makes them through the parent record's collection: the target names that record, or one above
    the parent attachment's record (a ticket for an attachment of one of its notes)."""
    await service.client.put(
        "/v1/targets/TicketNote/9", json={"parent": {"type": "Ticket", "id": "42"}}, headers=service.auth()
    )
    on_ticket = await upload(service, "report.txt")
    on_note = await upload(service, "note.txt", target_type="TicketNote", target_id="9")
    child = await upload(service, "appendix.txt", parent_attachment_id=on_ticket["seq"])
    assert (child["target_type"], child["target_id"], child["parent_attachment_id"]) == (
        "Attachment",
        on_ticket["id"],
        on_ticket["id"],
    )
    assert child["version"] == 1
    under_note = await upload(service, "scan.txt", parent_attachment_id=on_note["id"])
    assert under_note["ancestors"] == [f"Attachment:{on_note['id']}", "TicketNote:9", "Ticket:42"]
    # Not on the ticket's own list; anywhere below it, as a query by the ticket finds it.
    assert await names(service, "target_type=Ticket&target_id=42") == ["report.txt"]
    assert await names(service, "target_type=Ticket&target_id=42&descendants=true") == [
        "appendix.txt",
        "note.txt",
        "report.txt",
        "scan.txt",
    ]
    # A target that is not the parent's record, nor above it, is refused.
    resp = await service.upload_json(
        {
            "filename": "x.txt",
            "data": "eA==",
            "target_type": "TicketNote",
            "target_id": "9",
            "parent_attachment_id": on_ticket["id"],
        }
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == {
        "code": "invalid_parent",
        "message": "parent_attachment_id names an attachment that is not on TicketNote 9 or anywhere below it",
        "field": "parent_attachment_id",
    }


@pytest.mark.parametrize("target_type", ["Project", "Account", "ContractNote"])
async def test_an_upload_to_a_record_that_allows_no_nesting_cannot_nest(service, target_type):
    """Autotask: a parent attachment through a Project's collection is refused, not made a second version."""
    parent = await upload(service, "a.txt", target_type=target_type, target_id="1")
    resp = await service.upload_json(
        {
            "filename": "b.txt",
            "data": "Yg==",
            "target_type": target_type,
            "target_id": "1",
            "parent_attachment_id": parent["id"],
        }
    )
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["code"], error["field"]) == ("nesting_not_allowed", "parent_attachment_id")
    assert len(await service.rows()) == 1


@pytest.mark.parametrize("parent_type", ["Account", "Project", "ProjectNote", "SalesOrder"])
async def test_nesting_is_refused_for_the_parent_types_that_do_not_allow_it(service, parent_type):
    parent = await upload(service, "a.txt", target_type=parent_type, target_id="1")
    resp = await service.upload_json({"filename": "b.txt", "data": "Yg==", "parent_attachment_id": parent["id"]})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "nesting_not_allowed" and error["field"] == "parent_attachment_id"
    assert len(await service.rows()) == 1


async def test_parent_and_version_rules_are_checked(service):
    parent = await upload(service, "a.txt")
    unknown = "01900000-0000-7000-8000-000000000000"
    for body, code, field in (
        ({"parent_attachment_id": unknown}, "invalid_parent", "parent_attachment_id"),
        ({"parent_attachment_id": 2**40}, "invalid_parent", "parent_attachment_id"),
        (
            {"parent_attachment_id": parent["id"], "target_type": "Ticket", "target_id": "43"},
            "invalid_parent",
            "parent_attachment_id",
        ),
        ({"version_of": unknown}, "invalid_version", "version_of"),
        ({"version_of": parent["id"], "target_type": "Ticket", "target_id": "43"}, "invalid_version", "version_of"),
        ({"version_of": parent["id"], "parent_attachment_id": parent["id"]}, "invalid_value", "parent_attachment_id"),
        ({"version_of": "v1", "target_type": "Ticket", "target_id": "42"}, "invalid_value", "version_of"),
    ):
        resp = await service.upload_json({"filename": "b.txt", "data": "Yg==", **body})
        assert resp.status == 400, body
        error = (await resp.json())["error"]
        assert (error["code"], error["field"]) == (code, field), body
    other = service.other_account()
    theirs = await service.upload_json(
        {"filename": "b.txt", "data": "Yg==", "version_of": parent["seq"]}, headers=service.auth(other)
    )
    assert theirs.status == 400 and (await theirs.json())["error"]["field"] == "version_of"
    assert len(await service.rows()) == 1 and await service.rows(other) == []


async def test_descendants_at_any_depth_and_moving_a_target(service):
    put = service.client.put
    resp = await put(
        "/v1/targets/TicketNote/9", json={"parent": {"type": "Ticket", "id": "42"}}, headers=service.auth()
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["ancestors"] == ["TicketNote:9", "Ticket:42"]
    await upload(service, "on-ticket.txt")
    await upload(service, "on-note.txt", target_type="TicketNote", target_id="9")
    # A parent given inline on upload places the target too.
    entry = await upload(
        service, "on-time-entry.txt", target_type="TimeEntry", target_id="5", parent={"type": "TicketNote", "id": "9"}
    )
    assert entry["ancestors"] == ["TimeEntry:5", "TicketNote:9", "Ticket:42"]
    await upload(service, "elsewhere.txt", target_type="Ticket", target_id="99")

    assert await names(service, "target_type=Ticket&target_id=42&descendants=true") == [
        "on-note.txt",
        "on-ticket.txt",
        "on-time-entry.txt",
    ]
    assert await names(service, "target_type=Ticket&target_id=42") == ["on-ticket.txt"]
    count = await service.client.get(
        "/v1/attachments/count?target_type=Ticket&target_id=42&descendants=true", headers=service.auth()
    )
    assert await count.json() == {"count": 3}
    query = await service.client.post(
        "/v1/attachments/query",
        headers=service.auth(),
        json={"filter": [{"field": "ancestor", "op": "eq", "value": "TicketNote:9"}]},
    )
    assert sorted(a["filename"] for a in (await query.json())["attachments"]) == ["on-note.txt", "on-time-entry.txt"]
    # An entity named outright wins over an ancestor.
    assert await names(service, "target_type=TicketNote&target_id=9&ancestor=Ticket:42") == ["on-note.txt"]

    moved = await put(
        "/v1/targets/TicketNote/9", json={"parent": {"type": "Ticket", "id": "99"}}, headers=service.auth()
    )
    assert (await moved.json())["ancestors"] == ["TicketNote:9", "Ticket:99"]
    assert await names(service, "target_type=Ticket&target_id=42&descendants=true") == ["on-ticket.txt"]
    assert await names(service, "target_type=Ticket&target_id=99&descendants=true") == [
        "elsewhere.txt",
        "on-note.txt",
        "on-time-entry.txt",
    ]
    rows = {r["filename"]: r for r in await service.rows()}
    assert list(rows["on-time-entry.txt"]["ancestors"]) == ["TimeEntry:5", "TicketNote:9", "Ticket:99"]
    assert "target.moved" in [e["event_type"] for e in await service.events()]


async def test_a_target_cannot_go_under_its_own_descendant(service):
    await service.client.put(
        "/v1/targets/TicketNote/9", json={"parent": {"type": "Ticket", "id": "42"}}, headers=service.auth()
    )
    resp = await service.client.put(
        "/v1/targets/Ticket/42", json={"parent": {"type": "TicketNote", "id": "9"}}, headers=service.auth()
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "cycle"


async def test_an_async_target_move_reports_its_state(service):
    resp = await service.client.put(
        "/v1/targets/TicketNote/3",
        json={"parent": {"type": "Ticket", "id": "1"}},
        headers={**service.auth(), "Prefer": "respond-async"},
    )
    assert resp.status == 202
    status = await service.finished_upload((await resp.json())["status_url"])
    assert status["target"]["ancestors"] == ["TicketNote:3", "Ticket:1"]
