"""The job contract: typed, versioned, its JSON Schema current, its rules the API's. Pure, no I/O."""

from __future__ import annotations

import typing
import uuid
from pathlib import Path

import msgspec
import pytest

from services.core import contract
from services.core.contract import (
    Base64Source,
    Changes,
    IngestItem,
    IngestJob,
    NewAttachment,
    StagedSource,
    TargetRef,
    UpdateJob,
)
from services.core.errors import ApiError
from services.core.fields import PICKLISTS
from services.core.validation import check_changes, check_new_attachment, parse_changes, parse_new_attachment

SCHEMA = Path(__file__).parent.parent / "workers" / "contract.schema.json"
JOB_ID = "0192e2a0-0000-7000-8000-000000000001"


def ingest_payload(**item: object) -> dict[str, object]:
    return {
        "v": 1,
        "job_id": JOB_ID,
        "account_id": "42",
        "items": [{"id": str(uuid.uuid4()), "fields": {"target_type": "Task", "target_id": "1"}, **item}],
    }


def test_the_checked_in_json_schema_is_the_one_the_structs_generate():
    assert SCHEMA.read_text() == contract.schema_text(), "run: python -m services.core.contract > " + str(SCHEMA)


def test_the_schema_describes_every_job_outcome_and_event():
    schema = contract.json_schema()
    assert set(schema["properties"]["jobs"]["properties"]) == set(contract.JOB_TYPES)
    for name in ("IngestJob", "Failed", "Ingested", "AttachmentCreated", "UploadSessionClosed", "Base64Source"):
        assert name in schema["$defs"]


def test_the_picklists_of_the_contract_are_the_catalogues():
    for name, alias in (
        ("attachment_type", contract.AttachmentType),
        ("status", contract.Status),
        ("created_from", contract.CreatedFrom),
        ("publish", contract.Publish),
        ("created_by_type", contract.ActorType),
    ):
        assert set(typing.get_args(alias)) == {v.value for v in PICKLISTS[name]}, name


def test_every_job_survives_the_trip_through_json():
    jobs = [
        contract.decode_job("ingest", ingest_payload(source={"kind": "base64", "data": "aGk="})),
        UpdateJob(job_id="j", account_id="42", attachment_id=uuid.uuid4(), changes=Changes(name="n", status=None)),
        contract.CancelJob(job_id="j", account_id="42", attachment_id=uuid.uuid4()),
        contract.CloseSessionJob(job_id="j", account_id="42", session_token="s-1"),
        contract.PutTargetJob(
            job_id="j", account_id="42", target_type="Task", target_id="1", parent=TargetRef("P", "2")
        ),
        contract.SetLinksJob(
            job_id="j", account_id="42", target_type="Note", target_id="1", field="f", ids=[uuid.uuid4()]
        ),
    ]
    for job in jobs:
        payload = msgspec.json.decode(contract.encode(job))
        assert contract.decode_job(contract.FUNCTIONS[type(job)], payload) == job


def test_a_job_of_another_version_is_refused_by_name():
    for version in (None, 0, 2, "1"):
        payload = {**ingest_payload(source={"kind": "url"}), "v": version}
        with pytest.raises(contract.UnknownJob) as caught:
            contract.decode_job("ingest", payload)
        assert caught.value.field == "v" and "version" in caught.value.message


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"source": {"kind": "carrier-pigeon"}}, "items[0].source.kind"),
        ({"source": {"kind": "base64"}}, "items[0].source"),  # neither data nor key
        ({"source": {"kind": "url"}, "fields": {"display_order": "1"}}, "items[0].fields.display_order"),
        ({"source": {"kind": "url"}, "fields": {"display_order": 2**31}}, "items[0].fields.display_order"),
        ({"source": {"kind": "url"}, "fields": {"target_type": "1abc"}}, "items[0].fields.target_type"),
        ({"source": {"kind": "url"}, "fields": {"name": "x" * 256}}, "items[0].fields.name"),
        ({"source": {"kind": "url"}, "fields": {"publish": False}}, "items[0].fields.publish"),
        ({"source": {"kind": "url"}, "fields": {"colour": "red"}}, "items[0].fields"),
        ({"source": {"kind": "url"}, "id": "not-a-uuid"}, "items[0].id"),
    ],
)
def test_a_job_that_breaks_the_contract_is_refused_naming_the_field(item, field):
    payload = ingest_payload(**item)
    with pytest.raises(contract.UnknownJob) as caught:
        contract.decode_job("ingest", payload)
    assert caught.value.field == field, caught.value.message


def test_staged_bytes_must_be_the_jobs_own():
    with pytest.raises(contract.UnknownJob, match="staging/"):
        contract.decode_job("ingest", ingest_payload(source={"kind": "staged", "key": "objects/other/x/original"}))
    job = contract.decode_job("ingest", ingest_payload(source={"kind": "staged", "key": f"staging/{JOB_ID}/0"}))
    assert isinstance(job, IngestJob) and isinstance(job.items[0].source, StagedSource)


def test_what_the_ingress_validates_is_what_the_job_carries():
    new = parse_new_attachment({"target_type": "Task", "target_id": "7", "name": "  Q3  ", "size": 5, "data": "aGk="})
    item = IngestItem(id=uuid.uuid4(), fields=new, source=Base64Source(data="aGk="))
    job = IngestJob(job_id=JOB_ID, account_id="42", items=[item])
    decoded = contract.decode_job("ingest", msgspec.json.decode(contract.encode(job)))
    assert decoded == job
    assert isinstance(decoded, IngestJob) and decoded.items[0].fields.name == "Q3"
    assert decoded.items[0].fields.declared_size == 5  # "size" on the wire, as in the API


def test_wrong_typed_values_are_refused_not_read_as_absent():
    for field, value in (("publish", False), ("attachment_type", []), ("created_from", {})):
        with pytest.raises(ApiError) as caught:
            parse_new_attachment({"target_type": "T", "target_id": "1", "url": "https://x.test/a", field: value})
        assert caught.value.field == field


@pytest.mark.parametrize(
    ("fields", "source", "code", "field"),
    [
        ({"attachment_type": "URL", "url": "https://x.test"}, Base64Source(data="aGk="), "invalid_source", "source"),
        ({"url": "https://x.test"}, contract.LinkSource(), "invalid_source", "attachment_type"),
        ({}, contract.UrlSource(), "missing_source", "url"),
        ({"url": "https://x.test"}, Base64Source(data="aGk="), "too_many_sources", "url"),
        ({"target_id": None, "url": "https://x.test"}, contract.UrlSource(), "missing_field", "target_id"),
    ],
)
def test_the_worker_holds_a_typed_item_to_the_apis_cross_field_rules(fields, source, code, field):
    new = NewAttachment(**{"target_type": "Task", "target_id": "1", **fields})
    with pytest.raises(ApiError) as caught:
        check_new_attachment(new, source, "User")
    assert (caught.value.code, caught.value.field) == (code, field)


def test_a_contact_may_only_publish_to_all():
    new = NewAttachment(target_type="Task", target_id="1", url="https://x.test/a", publish="internal")
    with pytest.raises(ApiError) as caught:
        check_new_attachment(new, contract.UrlSource(), "Contact")
    assert caught.value.field == "publish"


def test_changes_carry_only_what_was_given_and_null_clears_status():
    changes = parse_changes({"name": " New ", "status": None})
    assert changes.given() == {"name": "New", "status": None}
    decoded = msgspec.json.decode(contract.encode(changes), type=Changes)
    assert check_changes(decoded) == {"name": "New", "status": None}
    with pytest.raises(ApiError) as caught:
        check_changes(Changes(name="   "))
    assert caught.value.field == "name"
    with pytest.raises(ApiError):
        check_changes(Changes())
