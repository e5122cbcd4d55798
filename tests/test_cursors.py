"""Keyset cursors: one format for list and query pages, refused (400 naming ``cursor``) when forged,
tampered with or made for another order, and checked for type and range before any value reaches SQL."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from services.core import listing
from services.core.errors import ApiError

ID = "0196e853-0000-7000-8000-000000000000"
DEFAULT = "display_order,created_at"
WHEN = "2024-05-01T12:00:00+00:00"


def forge(order: str, keys: list[Any], last_id: Any = ID) -> str:
    """A cursor as the service writes one, with whatever inside (json: orjson writes no int beyond 64 bits)."""
    payload = json.dumps({"o": order, "k": keys, "id": last_id}).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def case(label: str, order: str, keys: list[Any], last_id: Any = ID) -> Any:
    return pytest.param(order, keys, last_id, id=label)


# Each is well-formed JSON in the cursor's shape, with one value Postgres would refuse or that no row has.
OUT_OF_RANGE = [
    case("display_order beyond int32", DEFAULT, [2**31, WHEN]),
    case("display_order below int32", DEFAULT, [-(2**31) - 1, WHEN]),
    case("version beyond int32", "version", [2**31]),
    case("seq beyond int64", "seq", [2**63]),
    case("size below int64", "size", [-(2**63) - 1]),
    case("year 1", DEFAULT, [0, "0001-01-01T00:00:00+00:00"]),
    case("year 1 east of UTC", DEFAULT, [0, "0001-01-01T00:30:00+01:00"]),
    case("year 9999 west of UTC", DEFAULT, [0, "9999-12-31T23:59:59-01:00"]),
    case("year 9999", DEFAULT, [0, "9999-06-01T00:00:00+00:00"]),
    case("timestamp without offset", DEFAULT, [0, "2024-05-01T12:00:00"]),
    case("not a timestamp", DEFAULT, [0, "yesterday"]),
    case("timestamp as a number", DEFAULT, [0, 1714564800]),
    case("boolean for an integer", DEFAULT, [True, WHEN]),
    case("float for an integer", DEFAULT, [1.5, WHEN]),
    case("NUL in a string key", "name", ["a\x00b"]),
    case("string key longer than the column", "name", ["x" * 256]),
    case("null string key", "name", [None]),
    case("id not a string", DEFAULT, [0, WHEN], 42),
    case("id not a uuid", DEFAULT, [0, WHEN], "not-a-uuid"),
]


@pytest.mark.parametrize(("order", "keys", "last_id"), OUT_OF_RANGE)
def test_a_cursor_value_out_of_type_or_range_is_refused_before_sql(order: str, keys: list[Any], last_id: Any) -> None:
    with pytest.raises(ApiError) as caught:
        listing.decode_cursor(forge(order, keys, last_id), listing.parse_order_by(order))
    assert (caught.value.status, caught.value.code, caught.value.field) == (400, "invalid_cursor", "cursor")


def test_a_cursor_carries_its_order_and_is_refused_on_another() -> None:
    row = {"id": uuid.UUID(ID), "display_order": 3, "name": "a.txt", "size": None}
    made = listing.encode_cursor(listing.parse_order_by("-display_order,name"), row)
    assert listing.decode_cursor(made, listing.parse_order_by("-display_order,name")) == ([3, "a.txt"], uuid.UUID(ID))
    for other in ("display_order,name", "-display_order", "name,-display_order"):
        with pytest.raises(ApiError) as caught:
            listing.decode_cursor(made, listing.parse_order_by(other))
        assert caught.value.field == "cursor"
    # The query's pages are in id order: the same format, with no sort keys.
    by_id = listing.encode_cursor(listing.BY_ID, row)
    assert listing.decode_cursor(by_id, listing.BY_ID) == ([], uuid.UUID(ID))
    with pytest.raises(ApiError):
        listing.decode_cursor(by_id, listing.parse_order_by(None))
    with pytest.raises(ApiError):
        listing.decode_cursor(made, listing.BY_ID)


def test_the_extremes_that_fit_are_accepted() -> None:
    order = listing.parse_order_by("display_order,size,name")
    values, _ = listing.decode_cursor(forge("display_order,size,name", [2**31 - 1, 2**63 - 1, "x" * 255]), order)
    assert values == [2**31 - 1, 2**63 - 1, "x" * 255]


# -- through the API --------------------------------------------------------------------------------


async def refused(resp) -> None:
    text = await resp.text()
    assert resp.status == 400, f"{resp.status}: {text}"
    assert "Traceback" not in text
    error = (await resp.json())["error"]
    assert (error["code"], error["field"]) == ("invalid_cursor", "cursor"), error


@pytest.mark.parametrize(("order", "keys", "last_id"), OUT_OF_RANGE)
async def test_a_forged_list_cursor_is_a_400_naming_cursor(service, order, keys, last_id):
    cursor = forge(order, keys, last_id)
    resp = await service.client.get(
        f"/v1/attachments?target_type=Task&target_id=1&order_by={order}&cursor={cursor}", headers=service.auth()
    )
    await refused(resp)


async def test_list_and_query_cursors_are_one_format_and_not_interchangeable(service):
    for i in range(3):
        resp = await service.upload_json(
            {"target_type": "Task", "target_id": "1", "filename": f"f{i}.txt", "data": "eA=="}
        )
        assert resp.status == 201, await resp.text()
    auth = service.auth()
    listed = await (
        await service.client.get("/v1/attachments?target_type=Task&target_id=1&limit=1", headers=auth)
    ).json()
    body = {"filter": [{"field": "target_type", "op": "eq", "value": "Task"}], "max_records": 1}
    queried = await (await service.client.post("/v1/attachments/query", json=body, headers=auth)).json()
    list_cursor, query_cursor = listed["next_cursor"], queried["next_cursor"]
    assert list_cursor and query_cursor

    await refused(
        await service.client.post("/v1/attachments/query", json={**body, "cursor": list_cursor}, headers=auth)
    )
    await refused(
        await service.client.get(f"/v1/attachments?target_type=Task&target_id=1&cursor={query_cursor}", headers=auth)
    )
    await refused(
        await service.client.get(
            f"/v1/attachments?target_type=Task&target_id=1&order_by=-name&cursor={list_cursor}", headers=auth
        )
    )
    for forged in (forge("", [], 42), forge("", [], "x"), forge("", [0], ID), forge("seq", [1], ID)):
        await refused(await service.client.post("/v1/attachments/query", json={**body, "cursor": forged}, headers=auth))
    again = await service.client.post("/v1/attachments/query", json={**body, "cursor": query_cursor}, headers=auth)
    assert again.status == 200, await again.text()
