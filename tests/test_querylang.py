"""The query language compiled to SQL, without a database: shapes, params, and every kind of 400."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.errors import ApiError
from services.core.fields import FIELDS, PICKLISTS, describe_fields
from services.core.querylang import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    Compiled,
    compile_filter,
    parse_query_request,
    prefer_entity,
)
from services.core.sqlparams import Params

ID = "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b"
UTC = dt.UTC


def cond(field: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"field": field, "op": op} if value is None else {"field": field, "op": op, "value": value}


def one(field: str, op: str, value: Any = None) -> Compiled:
    return compile_filter([cond(field, op, value)])


def refused(nodes: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        compile_filter(nodes)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(
    ("field", "op", "value", "sql", "params"),
    [
        # integer
        ("size", "eq", 10, "size = $1::bigint", [10]),
        ("size", "noteq", 10, "size IS DISTINCT FROM $1::bigint", [10]),
        ("size", "gt", 10, "size > $1::bigint", [10]),
        ("size", "gte", 10, "size >= $1::bigint", [10]),
        ("width", "lt", 2**40, "width < $1::bigint", [2**40]),
        ("height", "lte", -1, "height <= $1::bigint", [-1]),
        ("seq", "in", [1, 2], "seq = ANY($1::bigint[])", [[1, 2]]),
        ("version", "notIn", [3], "(version IS NULL OR version <> ALL($1::bigint[]))", [[3]]),
        ("size", "exist", None, "size IS NOT NULL", []),
        ("size", "notExist", None, "size IS NULL", []),
        # uuid
        ("id", "eq", ID, "id = $1::uuid", [uuid.UUID(ID)]),
        ("id", "gt", ID, "id > $1::uuid", [uuid.UUID(ID)]),
        ("parent_attachment_id", "noteq", ID, "parent_attachment_id IS DISTINCT FROM $1::uuid", [uuid.UUID(ID)]),
        ("parent_attachment_id", "in", [ID.upper()], "parent_attachment_id = ANY($1::uuid[])", [[uuid.UUID(ID)]]),
        ("parent_attachment_id", "notExist", None, "parent_attachment_id IS NULL", []),
        # datetime: parsed, normalized to UTC
        (
            "created_at",
            "gte",
            "2024-05-01T12:00:00Z",
            "created_at >= $1::timestamptz",
            [dt.datetime(2024, 5, 1, 12, tzinfo=UTC)],
        ),
        (
            "updated_at",
            "lt",
            "2024-05-01T14:30:00+02:30",
            "updated_at < $1::timestamptz",
            [dt.datetime(2024, 5, 1, 12, tzinfo=UTC)],
        ),
        (
            "canceled_at",
            "eq",
            "2024-05-01T12:00:00.5+00:00",
            "canceled_at = $1::timestamptz",
            [dt.datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)],
        ),
        (
            "canceled_at",
            "notIn",
            ["2024-05-01T12:00:00Z"],
            "(canceled_at IS NULL OR canceled_at <> ALL($1::timestamptz[]))",
            [[dt.datetime(2024, 5, 1, 12, tzinfo=UTC)]],
        ),
        ("canceled_at", "exist", None, "canceled_at IS NOT NULL", []),
        # text
        ("name", "eq", "Report.pdf", "name = $1::text", ["Report.pdf"]),
        ("name", "noteq", "a", "name IS DISTINCT FROM $1::text", ["a"]),
        ("name", "gt", "m", 'name > $1::text COLLATE "C"', ["m"]),
        ("filename", "lte", "m", 'filename <= $1::text COLLATE "C"', ["m"]),
        ("name", "beginsWith", "Rep", "name ILIKE $1::text", ["Rep%"]),
        ("name", "endsWith", ".PDF", "name ILIKE $1::text", ["%.PDF"]),
        ("content_type", "contains", "image", "content_type ILIKE $1::text", ["%image%"]),
        ("target_id", "in", ["1", "2"], "target_id = ANY($1::text[])", [["1", "2"]]),
        ("field", "notIn", ["docs"], "(field IS NULL OR field <> ALL($1::text[]))", [["docs"]]),
        ("url", "exist", None, "url IS NOT NULL", []),
        # boolean
        ("available", "eq", False, "available = $1::boolean", [False]),
        ("available", "noteq", True, "available IS DISTINCT FROM $1::boolean", [True]),
        ("available", "in", [True], "available = ANY($1::boolean[])", [[True]]),
        # picklist
        ("status", "eq", "approved", "status = $1::text", ["approved"]),
        ("status", "noteq", "pending", "status IS DISTINCT FROM $1::text", ["pending"]),
        ("attachment_type", "in", ["URL", "FILE_LINK"], "attachment_type = ANY($1::text[])", [["URL", "FILE_LINK"]]),
        ("publish", "notIn", ["internal"], "(publish IS NULL OR publish <> ALL($1::text[]))", [["internal"]]),
        ("status", "notExist", None, "status IS NULL", []),
        # the virtual ancestor field
        ("ancestor", "eq", "Ticket:42", "ancestors @> ARRAY[$1::text]", ["Ticket:42"]),
        ("ancestor", "in", ["Ticket:42", "Project:7"], "ancestors && $1::text[]", [["Ticket:42", "Project:7"]]),
    ],
)
def test_each_operator_compiles(field: str, op: str, value: Any, sql: str, params: list[Any]) -> None:
    assert one(field, op, value) == Compiled(sql, params)


def test_groups_nest_and_placeholders_continue_the_statements_params() -> None:
    params = Params(["account", "other"])
    compiled = compile_filter(
        [
            cond("target_type", "eq", "Ticket"),
            {
                "op": "or",
                "items": [
                    cond("size", "gt", 100),
                    {"op": "and", "items": [cond("status", "exist"), cond("name", "contains", "x")]},
                ],
            },
        ],
        params,
    )
    assert compiled.sql == (
        "(target_type = $3::text AND (size > $4::bigint OR (status IS NOT NULL AND name ILIKE $5::text)))"
    )
    assert compiled.params == ["Ticket", 100, "%x%"]


def test_a_group_of_one_needs_no_parentheses() -> None:
    assert compile_filter([{"op": "or", "items": [cond("size", "eq", 1)]}]).sql == "size = $1::bigint"


@pytest.mark.parametrize("value", ["x'; DROP TABLE attachments; --", "%", "_", "\\", "a%b_c\\d"])
def test_a_value_only_ever_reaches_the_params(value: str) -> None:
    for op in ("eq", "beginsWith", "endsWith", "contains", "in"):
        compiled = one("name", op, [value] if op == "in" else value)
        assert value not in compiled.sql
        assert compiled.sql == one("name", op, ["v"] if op == "in" else "v").sql


@pytest.mark.parametrize(
    ("op", "value", "pattern"),
    [
        ("contains", "50%", "%50\\%%"),
        ("beginsWith", "a_b", "a\\_b%"),
        ("endsWith", "C:\\dir", "%C:\\\\dir"),
        ("contains", "%_\\", "%\\%\\_\\\\%"),
    ],
)
def test_pattern_metacharacters_are_escaped(op: str, value: str, pattern: str) -> None:
    assert one("name", op, value).params == [pattern]


@settings(max_examples=200, deadline=None, database=None)
@given(value=st.text(max_size=255), op=st.sampled_from(["eq", "noteq", "gt", "beginsWith", "contains", "in"]))
def test_sql_never_depends_on_a_value(value: str, op: str) -> None:
    wrap = (lambda v: [v]) if op == "in" else (lambda v: v)
    try:
        compiled = one("name", op, wrap(value))
    except ApiError as e:  # NUL and unpaired surrogates are refused, which is fine too
        assert e.field == "filter[0].value" + ("[0]" if op == "in" else "")
        return
    assert compiled.sql == one("name", op, wrap("v")).sql


@settings(max_examples=200, deadline=None, database=None)
@given(
    value=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40).map(
        lambda v: "'" + v
    )
)
def test_sql_never_contains_a_value(value: str) -> None:
    # The compiled SQL has no single quotes at all, so a value that holds one can never be in it.
    for op in ("eq", "contains", "gt"):
        compiled = one("name", op, value)
        assert value not in compiled.sql
        assert "'" not in compiled.sql


# -- refusals: each names the path to what is wrong ----------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "code", "path"),
    [
        ([], "invalid_filter", "filter"),
        (None, "invalid_filter", "filter"),
        ({"field": "size"}, "invalid_filter", "filter"),
        (["size"], "invalid_filter", "filter[0]"),
        ([cond("xyz", "eq", 1)], "invalid_field", "filter[0].field"),
        ([{"op": "eq", "value": 1}], "invalid_field", "filter[0].field"),
        ([cond("sha256", "eq", "ab")], "invalid_field", "filter[0].field"),
        ([cond("account_id", "eq", "a")], "invalid_field", "filter[0].field"),
        ([cond("ancestors", "eq", "Ticket:1")], "invalid_field", "filter[0].field"),
        (
            [
                {
                    "op": "and",
                    "items": [
                        cond("size", "eq", 1),
                        {
                            "op": "or",
                            "items": [cond("name", "eq", "a"), cond("size", "eq", 1), cond("sha256", "exist")],
                        },
                    ],
                }
            ],
            "invalid_field",
            "filter[0].items[1].items[2].field",
        ),
        ([cond("name", "like", "a")], "invalid_operator", "filter[0].op"),
        ([cond("name", "EQ", "a")], "invalid_operator", "filter[0].op"),
        ([{"field": "name", "value": "a"}], "invalid_operator", "filter[0].op"),
        ([cond("size", "contains", "1")], "invalid_operator", "filter[0].op"),
        ([cond("status", "beginsWith", "app")], "invalid_operator", "filter[0].op"),
        ([cond("available", "gt", True)], "invalid_operator", "filter[0].op"),
        ([cond("ancestor", "noteq", "Ticket:1")], "invalid_operator", "filter[0].op"),
        ([cond("ancestor", "exist")], "invalid_operator", "filter[0].op"),
        ([{"op": "xor", "items": [cond("size", "eq", 1)]}], "invalid_operator", "filter[0].op"),
        ([{"op": "and", "items": []}], "invalid_filter", "filter[0].items"),
        ([{"op": "or"}], "invalid_filter", "filter[0].items"),
        ([{"field": "size", "op": "eq", "values": [1]}], "invalid_filter", "filter[0].values"),
        ([cond("size", "eq", "abc")], "invalid_value", "filter[0].value"),
        ([cond("size", "eq", True)], "invalid_value", "filter[0].value"),
        ([cond("size", "eq", 1.5)], "invalid_value", "filter[0].value"),
        ([cond("size", "eq", 2**63)], "invalid_value", "filter[0].value"),
        ([{"field": "size", "op": "eq"}], "invalid_value", "filter[0].value"),
        ([cond("available", "eq", "true")], "invalid_value", "filter[0].value"),
        ([cond("available", "eq", 1)], "invalid_value", "filter[0].value"),
        ([cond("id", "eq", "not-a-uuid")], "invalid_value", "filter[0].value"),
        ([cond("id", "eq", 42)], "invalid_value", "filter[0].value"),
        ([cond("created_at", "gt", "yesterday")], "invalid_value", "filter[0].value"),
        ([cond("created_at", "gt", "2024-05-01T12:00:00")], "invalid_value", "filter[0].value"),
        ([cond("created_at", "gt", "0001-01-01T00:00:00+01:00")], "invalid_value", "filter[0].value"),
        ([cond("created_at", "gt", 1714564800)], "invalid_value", "filter[0].value"),
        ([cond("status", "eq", "APPROVED")], "invalid_value", "filter[0].value"),
        ([cond("attachment_type", "eq", "Attachment")], "invalid_value", "filter[0].value"),
        ([cond("name", "eq", 5)], "invalid_value", "filter[0].value"),
        ([cond("name", "eq", "x" * 256)], "invalid_value", "filter[0].value"),
        ([cond("name", "eq", "a\x00b")], "invalid_value", "filter[0].value"),
        ([cond("name", "contains", "\ud800")], "invalid_value", "filter[0].value"),
        ([cond("size", "exist", 1)], "invalid_value", "filter[0].value"),
        ([cond("size", "in", [])], "invalid_value", "filter[0].value"),
        ([cond("size", "in", 1)], "invalid_value", "filter[0].value"),
        ([cond("size", "in", list(range(501)))], "invalid_value", "filter[0].value"),
        ([cond("size", "notIn", [1, "2"])], "invalid_value", "filter[0].value[1]"),
        ([cond("status", "in", ["approved", None])], "invalid_value", "filter[0].value[1]"),
    ],
)
def test_refusals_name_the_path(nodes: Any, code: str, path: str) -> None:
    error = refused(nodes)
    assert (error.code, error.field) == (code, path)


def test_refusal_messages_name_the_culprit() -> None:
    assert refused([cond("sha256", "eq", "ab")]).message == "field 'sha256' cannot be queried"
    assert "'xyz' cannot be queried" in refused([cond("xyz", "eq", 1)]).message
    assert "'like'" in refused([cond("name", "like", "a")]).message
    assert "approved, pending, required" in refused([cond("status", "eq", "nope")]).message
    long = refused([cond("xyz" * 1000, "eq", 1)]).message
    assert len(long) < 120  # a client's value is never echoed whole


def nested(depth: int) -> list[dict[str, Any]]:
    node: dict[str, Any] = cond("size", "eq", 1)
    for _ in range(depth):
        node = {"op": "and", "items": [node]}
    return [node]


def test_nesting_is_capped() -> None:
    assert compile_filter(nested(MAX_DEPTH)).params == [1]
    error = refused(nested(MAX_DEPTH + 1))
    assert error.code == "invalid_filter"
    assert error.field == "filter[0]" + ".items[0]" * MAX_DEPTH


def test_conditions_are_capped() -> None:
    assert len(compile_filter([cond("size", "eq", i) for i in range(MAX_CONDITIONS)]).params) == MAX_CONDITIONS
    error = refused([{"op": "or", "items": [cond("size", "eq", i) for i in range(MAX_CONDITIONS + 1)]}])
    assert (error.code, error.field) == ("invalid_filter", f"filter[0].items[{MAX_CONDITIONS}]")


def test_every_queryable_field_compiles_with_eq_or_exist() -> None:
    for name, spec in FIELDS.items():
        if not spec.queryable:
            assert refused([cond(name, "exist")]).code == "invalid_field"
        elif spec.column is not None:
            assert one(name, "exist").sql == f"{spec.column} IS NOT NULL"


# -- the request around the filter ---------------------------------------------------------------

FILTER = [cond("size", "gt", 0)]


def test_query_request_defaults_and_values() -> None:
    request = parse_query_request({"filter": FILTER}, Params(["account"]))
    assert request.filter == Compiled("size > $2::bigint", [0])
    assert (request.max_records, request.include_fields, request.cursor) == (500, None, None)

    request = parse_query_request(
        {"filter": FILTER, "max_records": 1, "cursor": "abc", "include_fields": ["id", "name", "id", "sha256"]},
        default_max=50,
    )
    assert (request.max_records, request.include_fields, request.cursor) == (1, ("id", "name", "sha256"), "abc")
    assert parse_query_request({"filter": FILTER}, default_max=50).max_records == 50


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ([], "invalid_body", None),
        ({}, "invalid_filter", "filter"),
        ({"filter": []}, "invalid_filter", "filter"),
        ({"filter": FILTER, "MaxRecords": 5}, "unknown_field", "MaxRecords"),
        ({"filter": FILTER, "max_records": 0}, "invalid_value", "max_records"),
        ({"filter": FILTER, "max_records": 501}, "invalid_value", "max_records"),
        ({"filter": FILTER, "max_records": "10"}, "invalid_value", "max_records"),
        ({"filter": FILTER, "max_records": True}, "invalid_value", "max_records"),
        ({"filter": FILTER, "include_fields": "name"}, "invalid_value", "include_fields"),
        ({"filter": FILTER, "include_fields": []}, "invalid_value", "include_fields"),
        ({"filter": FILTER, "include_fields": ["name", "nope"]}, "invalid_field", "include_fields[1]"),
        ({"filter": FILTER, "include_fields": ["ancestor"]}, "invalid_field", "include_fields[0]"),
        ({"filter": FILTER, "cursor": 5}, "invalid_value", "cursor"),
    ],
)
def test_query_request_refusals(body: Any, code: str, path: str | None) -> None:
    with pytest.raises(ApiError) as caught:
        parse_query_request(body)
    assert (caught.value.code, caught.value.field, caught.value.status) == (code, path, 400)


# -- the catalogue --------------------------------------------------------------------------------


def test_catalogue_describes_every_field_and_picklist() -> None:
    described = {d["name"]: d for d in describe_fields()}
    assert described.keys() == FIELDS.keys()
    assert described["sha256"]["queryable"] is False
    assert described["name"] == {
        **described["name"],
        "type": "text",
        "max_length": 255,
        "queryable": True,
        "writable": True,
        "updatable": True,
        "picklist_values": None,
    }
    assert described["attachment_type"]["picklist_values"][3] == {
        "value": "FILE_ATTACHMENT",
        "label": "Attachment",
        "sort_order": 4,
        "is_default": True,
        "is_active": True,
    }
    assert {n for n, s in FIELDS.items() if s.updatable} == {"name", "display_order", "available", "status"}
    for name, values in PICKLISTS.items():
        assert FIELDS[name].picklist == name
        assert sum(v.is_default for v in values) == (0 if name == "status" else 1)


def test_prefer_entity_drops_top_level_ancestors_only_when_an_entity_is_named():
    entity = {"field": "target_id", "op": "eq", "value": "9"}
    parent = {"field": "ancestor", "op": "eq", "value": "Ticket:1"}
    other = {"field": "name", "op": "contains", "value": "x"}
    assert prefer_entity([entity, parent, other]) == [entity, other]
    unchanged = [parent, other]
    assert prefer_entity(unchanged) is unchanged
    in_group = [{"op": "or", "items": [entity, parent]}]
    assert prefer_entity(in_group) is in_group
    not_eq = [{**entity, "op": "beginsWith"}, parent]
    assert prefer_entity(not_eq) is not_eq


def test_an_error_in_a_dropped_ancestor_still_names_it():
    body = {
        "filter": [
            {"field": "target_id", "op": "eq", "value": "9"},
            {"field": "ancestor", "op": "bogus", "value": "Ticket:1"},
        ]
    }
    with pytest.raises(ApiError) as caught:
        parse_query_request(body)
    assert caught.value.field == "filter[1].op"
