"""The query service's fast rendering (API_COLUMNS + api_records, LinkSigner) writes exactly the JSON
that to_api and signed_path write."""

from __future__ import annotations

import base64
import datetime as dt
import time

import jwt
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core import records, signing
from services.core.fields import COLUMN_FIELDS
from services.core.records import API_COLUMNS, COLUMNS
from services.core.repository import INSERT_COLUMNS
from tests.conftest import jpeg_bytes


def test_api_columns_name_the_record_fields_in_order() -> None:
    assert records.API_FIELDS[-6:] == (
        "created_by",
        "impersonator_id",
        "created_at",
        "updated_at",
        "canceled_at",
        "version_of",
    )
    assert API_COLUMNS.endswith("storage_key, variants")


async def test_the_field_catalogue_is_the_one_column_list(db) -> None:
    """fields.COLUMN_FIELDS names every column of the table, in its order; the insert writes all but the
    ones the database fills in; the API record shows all but the storage details."""
    table = await db.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'attachments' ORDER BY ordinal_position"
    )
    assert [r["column_name"] for r in table] == [spec.column for spec in COLUMN_FIELDS]
    assert [spec.name for spec in COLUMN_FIELDS if spec.name not in INSERT_COLUMNS] == [
        "seq",
        "is_latest",
        "created_at",
        "updated_at",
        "canceled_at",
        "unlinked_at",
    ]
    shown = {*records.API_FIELDS, "created_by_type", "created_by_id"} - {"created_by"}
    assert {spec.name for spec in COLUMN_FIELDS} - shown == {"version_root", "storage_key", "variants", "unlinked_at"}


@given(
    st.text(max_size=80),
    st.sampled_from(sorted(signing.VARIANTS)),
    st.integers(0, 10**12),
    st.binary(min_size=1, max_size=200),
)
def test_the_link_signer_signs_as_signed_path(attachment_id, variant, expires, secret) -> None:
    signer = signing.LinkSigner(secret, expires, "https://files.example.com")
    assert signer.path(attachment_id, variant) == "https://files.example.com" + signing.signed_path(
        secret, attachment_id, variant, expires
    )


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
        dt.datetime(2024, 5, 1, 12, 0, 0, 7, tzinfo=dt.UTC),
        dt.datetime(1, 1, 1, tzinfo=dt.UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
        dt.datetime(2024, 5, 1, 12, 0),
    ],
)
def test_json_responses_write_date_times_as_plain_does(value) -> None:
    assert orjson.dumps(value, option=orjson.OPT_UTC_Z) == orjson.dumps(records._plain(value))


async def test_every_kind_of_row_renders_the_same_both_ways(service):
    auth = service.auth()

    async def create(body: dict) -> dict:
        resp = await service.upload_json({"target_type": "Ticket", "target_id": "5", **body})
        assert resp.status == 201, await resp.text()
        return await resp.json()

    photo = await create(
        {
            "filename": "p.jpg",
            "data": base64.b64encode(jpeg_bytes(300, 200)).decode(),
            "status": "pending",
            "display_order": 3,
        }
    )
    await create({"attachment_type": "URL", "url": "https://example.com/a?b=c", "name": "A link"})
    text = await create({"filename": "n\u00e9.txt", "data": "bm90ZQ==", "available": False})
    await create({"filename": "n2.txt", "data": "bm90ZQ==", "version_of": text["id"]})
    await create(
        {
            "filename": "child.txt",
            "data": "Yw==",
            "target_type": None,
            "target_id": None,
            "parent_attachment_id": photo["id"],
        }
    )
    gone = await create({"filename": "gone.txt", "data": "Zw=="})
    assert (await service.client.delete(f"/v1/attachments/{gone['id']}", headers=auth)).status == 204

    secret, expires = service.settings.link_secret, signing.expiry(time.time(), 3600)
    sql = "FROM attachments WHERE account_id = $1 ORDER BY seq"
    old_rows = await service.pool.fetch(f"SELECT {COLUMNS} {sql}", service.account)
    new_rows = await service.pool.fetch(f"SELECT {API_COLUMNS} {sql}", service.account)
    assert len(old_rows) == 6
    for base in ("http://127.0.0.1:8080", "https://attachd.example.com/api"):
        slow = [records.to_api(r, base_url=base, secret=secret, expires=expires) for r in old_rows]
        fast = records.api_records(new_rows, base_url=base, secret=secret, expires=expires)
        assert orjson.dumps(fast, option=orjson.OPT_UTC_Z) == orjson.dumps(slow)
        # ...and the record of a job outcome (row_to_dict) renders the same again.
        assert [
            records.to_api(records.row_to_dict(r), base_url=base, secret=secret, expires=expires) for r in old_rows
        ] == slow

    # Through the API: list, get and query answer the records to_api makes.
    by_id = {str(r["id"]): r for r in old_rows}
    listed = await service.client.get(
        "/v1/attachments?target_type=Ticket&target_id=5&include_canceled=true&versions=all", headers=auth
    )
    body = await listed.json()
    base = str(service.client.make_url("")).rstrip("/")
    assert body["attachments"] and all(
        a
        == orjson.loads(
            orjson.dumps(records.to_api(by_id[a["id"]], base_url=base, secret=secret, expires=_expires_of(a, expires)))
        )
        for a in body["attachments"]
    )
    one = await (await service.client.get(f"/v1/attachments/{photo['id']}", headers=auth)).json()
    assert one == orjson.loads(
        orjson.dumps(
            records.to_api(by_id[photo["id"]], base_url=base, secret=secret, expires=_expires_of(one, expires))
        )
    )
    assert one["file"]["thumbnail"] and one["created_at"].endswith("Z")


def _expires_of(record: dict, default: int) -> int:
    link = record["file"]["original"]
    return int(link.split("expires=")[1].split("&")[0]) if link else default


def test_a_verified_token_is_cached_and_still_expires() -> None:
    from services.core import auth
    from services.core.errors import ApiError

    secret = "s" * 32
    verifier = auth.TokenVerifier(secret, leeway_s=0)
    token = auth.mint_token(secret, account="acct-1", sub="u1", ttl_s=3)  # 2-3 s to use it, on a busy machine
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    first = verifier.verify(token)
    assert verifier.verify(token) is first and first.account_id == "acct-1"
    with pytest.raises(ApiError) as tampered:
        verifier.verify(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert tampered.value.status == 401
    time.sleep(expires + 0.2 - time.time())
    with pytest.raises(ApiError) as expired:
        verifier.verify(token)
    assert expired.value.status == 401 and "expired" in expired.value.message


def test_an_ascending_cursor_is_one_row_comparison() -> None:
    import uuid

    from services.core import listing
    from services.core.sqlparams import Params

    order = listing.parse_order_by(None)
    last = uuid.uuid4()
    now = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    params = Params(["account", "Task", "9"])
    clause = listing.after_sql(order, [3, now], last, params)
    assert clause == "((display_order, created_at, id) > ($4, $5, $6))" and params.values[3:] == [3, now, last]
    # Mixed directions keep the expanded form.
    clause = listing.after_sql(listing.parse_order_by("-display_order,name"), [3, "a"], last, Params())
    assert clause.startswith("(display_order < ")


async def test_default_order_pages_are_the_whole_list(service):
    for i, order in enumerate([1, 0, 1, 0, 2, 0, 1]):
        resp = await service.upload_json(
            {"target_type": "Task", "target_id": "9", "filename": f"f{i}.txt", "data": "eA==", "display_order": order}
        )
        assert resp.status == 201, await resp.text()
    auth = service.auth()
    whole = await (await service.client.get("/v1/attachments?target_type=Task&target_id=9", headers=auth)).json()
    seen, cursor = [], None
    while True:
        page = await (
            await service.client.get(
                "/v1/attachments?target_type=Task&target_id=9&limit=2" + (f"&cursor={cursor}" if cursor else ""),
                headers=auth,
            )
        ).json()
        seen += [a["id"] for a in page["attachments"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == [a["id"] for a in whole["attachments"]] and len(seen) == 7
    assert [a["display_order"] for a in whole["attachments"]] == [0, 0, 0, 1, 1, 1, 2]
