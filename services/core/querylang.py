"""The AttachmentInfo-style filter, compiled to parameterized SQL for asyncpg. Pure, no I/O.

A query body is ``{"filter": [<node>, ...], "max_records": n, "include_fields": [...],
"cursor": "..."}``. A node is a condition ``{"field": "name", "op": "contains", "value": "spec"}``
or a group ``{"op": "and" | "or", "items": [<node>, ...]}``; the top-level list is an implicit
``and`` and, as in Autotask, must hold at least one node. Groups nest at most ``MAX_DEPTH``
deep and a filter holds at most ``MAX_CONDITIONS`` conditions.

Operators, by field type (see ``services.core.fields``):

- eq, noteq, in, notIn, exist, notExist: every type. ``in``/``notIn`` take 1..``MAX_LIST``
  values; ``exist``/``notExist`` take none.
- gt, gte, lt, lte: integer, datetime, uuid, text. Text compares by code point
  (``COLLATE "C"``), so the order never depends on the database's locale.
- beginsWith, endsWith, contains: text only, case-insensitive, and the value is matched
  literally: ``%``, ``_`` and ``\\`` in it are escaped.
- The virtual ``ancestor`` field takes eq and in only: attachments anywhere under
  ``"Ticket:42"`` (one GIN probe on ``ancestors``).

Values must have the field's type: an int (not a bool) within bigint, a bool, a UUID string,
an ISO-8601 date-time with an offset or ``Z``, a string no longer than the field's maximum,
a picklist value. Every value becomes a parameter with an explicit cast; the SQL holds only
column names from ``FIELDS`` and ``$n`` placeholders.

Null semantics: a NULL column satisfies exactly notExist, noteq and notIn ("is not x" holds
where there is nothing); every other operator is false on it. A false condition may come out
as SQL NULL rather than FALSE, which is the same thing under WHERE, AND and OR, so use the
expression in positive position (``WHERE ... AND (<sql>)``) and never under NOT.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.core.errors import bad_request
from services.core.fields import FIELDS, PICKLISTS, FieldSpec
from services.core.sqlparams import Params

MAX_DEPTH = 16
MAX_CONDITIONS = 200
MAX_LIST = 500
# A query page's most records, and its size when max_records is not given.
MAX_RECORDS = 500

OPERATORS = (
    "eq",
    "noteq",
    "gt",
    "gte",
    "lt",
    "lte",
    "beginsWith",
    "endsWith",
    "contains",
    "exist",
    "notExist",
    "in",
    "notIn",
)
_TEMPLATES = {
    "eq": "{col} = {p}",
    "noteq": "{col} IS DISTINCT FROM {p}",
    "gt": "{col} > {p}",
    "gte": "{col} >= {p}",
    "lt": "{col} < {p}",
    "lte": "{col} <= {p}",
    "beginsWith": "{col} ILIKE {p}",
    "endsWith": "{col} ILIKE {p}",
    "contains": "{col} ILIKE {p}",
    "exist": "{col} IS NOT NULL",
    "notExist": "{col} IS NULL",
    "in": "{col} = ANY({p})",
    "notIn": "({col} IS NULL OR {col} <> ALL({p}))",
}
# Virtual fields: their own templates, whose keys are also the operators they take.
_VIRTUAL = {
    "ancestor": {"eq": "ancestors @> ARRAY[{p}]", "in": "ancestors && {p}"},
}
_PATTERNS = {"beginsWith": "{}%", "endsWith": "%{}", "contains": "%{}%"}
_LIKE_ESCAPES = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_"})
_ORDERING = frozenset({"gt", "gte", "lt", "lte"})
_BASIC = frozenset({"eq", "noteq", "in", "notIn", "exist", "notExist"})
_OPERATORS_BY_TYPE = {
    "uuid": _BASIC | _ORDERING,
    "integer": _BASIC | _ORDERING,
    "datetime": _BASIC | _ORDERING,
    "text": _BASIC | _ORDERING | _PATTERNS.keys(),
    "boolean": _BASIC,
    "picklist": _BASIC,
}
_PG_TYPES = {
    "uuid": "uuid",
    "integer": "bigint",
    "datetime": "timestamptz",
    "text": "text",
    "picklist": "text",
    "boolean": "boolean",
}
_INT64 = range(-(2**63), 2**63)


def _integer(value: Any, spec: FieldSpec) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in _INT64:
        return value
    raise ValueError("an integer")


def _boolean(value: Any, spec: FieldSpec) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("true or false")


def _uuid(value: Any, spec: FieldSpec) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ValueError("a UUID string")


def _datetime(value: Any, spec: FieldSpec) -> dt.datetime:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                return parsed.astimezone(dt.UTC)
        except (ValueError, OverflowError):  # OverflowError: shifting year 1 or 9999 to UTC
            pass
    raise ValueError("an ISO-8601 date-time with a timezone, like 2024-05-01T12:00:00Z")


def _text(value: Any, spec: FieldSpec) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    if spec.max_length is not None and len(value) > spec.max_length:
        raise ValueError(f"a string of at most {spec.max_length} characters")
    # Postgres text cannot hold NUL, and a lone surrogate cannot be encoded: both would be a 500.
    if "\x00" in value or not _encodes(value):
        raise ValueError("text without NUL characters or unpaired surrogates")
    return value


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _picklist(value: Any, spec: FieldSpec) -> str:
    allowed = [v.value for v in PICKLISTS[spec.picklist or spec.name]]
    if value not in allowed:
        raise ValueError(f"one of {', '.join(allowed)}")
    return str(value)


_COERCE: dict[str, Callable[[Any, FieldSpec], Any]] = {
    "integer": _integer,
    "boolean": _boolean,
    "uuid": _uuid,
    "datetime": _datetime,
    "text": _text,
    "picklist": _picklist,
}


def _show(value: Any) -> str:
    """A client's value, quoted for a message and cut short: errors never echo a whole payload."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_keys(node: dict[str, Any], allowed: frozenset[str], path: str) -> None:
    for key in node:
        if key not in allowed:
            raise bad_request(
                "invalid_filter", f"unknown key {_show(key)}; expected {', '.join(sorted(allowed))}", f"{path}.{key}"
            )


_GROUP_KEYS = frozenset({"op", "items"})
_CONDITION_KEYS = frozenset({"field", "op", "value"})


@dataclass(frozen=True)
class Compiled:
    sql: str  # a boolean expression over placeholders of the statement's Params
    params: list[Any]  # the values this filter bound, in placeholder order


class _Compiler:
    def __init__(self, params: Params) -> None:
        self.params = params
        self.conditions = 0

    def bind(self, value: Any, cast: str) -> str:
        return self.params.add(value, cast)

    def items(self, items: Any, path: str, depth: int, joiner: str) -> str:
        if not isinstance(items, list) or not items:
            raise bad_request("invalid_filter", f"{path} must be a non-empty list of conditions and groups", path)
        parts = [self.node(item, f"{path}[{i}]", depth) for i, item in enumerate(items)]
        return parts[0] if len(parts) == 1 else "(" + f" {joiner} ".join(parts) + ")"

    def node(self, node: Any, path: str, depth: int) -> str:
        if not isinstance(node, dict):
            raise bad_request("invalid_filter", f"{path} must be a condition or a group (an object)", path)
        if "items" in node or node.get("op") in ("and", "or"):
            return self.group(node, path, depth)
        return self.condition(node, path)

    def group(self, node: dict[str, Any], path: str, depth: int) -> str:
        _check_keys(node, _GROUP_KEYS, path)
        op = node.get("op")
        if op not in ("and", "or"):
            raise bad_request("invalid_operator", f"a group's op is 'and' or 'or', not {_show(op)}", f"{path}.op")
        if depth >= MAX_DEPTH:
            raise bad_request("invalid_filter", f"groups nest at most {MAX_DEPTH} deep", path)
        return self.items(node.get("items"), f"{path}.items", depth + 1, op.upper())

    def condition(self, node: dict[str, Any], path: str) -> str:
        _check_keys(node, _CONDITION_KEYS, path)
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise bad_request("invalid_filter", f"a filter holds at most {MAX_CONDITIONS} conditions", path)

        name = node.get("field")
        spec = FIELDS.get(name) if isinstance(name, str) else None
        if spec is None or not spec.queryable:
            what = "field" if spec is not None else "unknown field"
            raise bad_request("invalid_field", f"{what} {_show(name)} cannot be queried", f"{path}.field")

        op = node.get("op")
        if op not in OPERATORS:
            raise bad_request(
                "invalid_operator", f"unknown operator {_show(op)}; use one of {', '.join(OPERATORS)}", f"{path}.op"
            )
        templates = _VIRTUAL.get(spec.name, _TEMPLATES)
        allowed = templates.keys() if spec.name in _VIRTUAL else _OPERATORS_BY_TYPE[spec.type]
        if op not in allowed:
            raise bad_request(
                "invalid_operator",
                f"{op} does not apply to {spec.name}; use one of {', '.join(o for o in OPERATORS if o in allowed)}",
                f"{path}.op",
            )

        value, value_path = node.get("value"), f"{path}.value"
        pg_type = _PG_TYPES[spec.type]
        if op in ("exist", "notExist"):
            if value is not None:
                raise bad_request("invalid_value", f"{op} takes no value", value_path)
            param = ""
        elif op in ("in", "notIn"):
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST:
                raise bad_request("invalid_value", f"{op} takes a list of 1 to {MAX_LIST} values", value_path)
            values = [_coerce(spec, v, f"{value_path}[{i}]") for i, v in enumerate(value)]
            param = self.bind(values, f"{pg_type}[]")
        elif op in _PATTERNS:
            literal = _coerce(spec, value, value_path).translate(_LIKE_ESCAPES)
            param = self.bind(_PATTERNS[op].format(literal), "text")
        elif op in _ORDERING and spec.type == "text":
            # An explicit collation on either operand governs the comparison.
            param = self.bind(_coerce(spec, value, value_path), 'text COLLATE "C"')
        else:
            param = self.bind(_coerce(spec, value, value_path), pg_type)
        return templates[op].format(col=spec.column, p=param)


def _coerce(spec: FieldSpec, value: Any, path: str) -> Any:
    try:
        return _COERCE[spec.type](value, spec)
    except ValueError as e:
        raise bad_request("invalid_value", f"{spec.name} takes {e}, not {_show(value)}", path) from None


def compile_filter(nodes: Any, params: Params | None = None) -> Compiled:
    """Compile a filter list to a boolean SQL expression whose values are bound in ``params`` (a new
    ``Params`` when None: placeholders from $1); a bad filter is an ApiError naming its path."""
    params = Params() if params is None else params
    start = len(params)
    sql = _Compiler(params).items(nodes, "filter", 0, "AND")
    return Compiled(sql, params.values[start:])


@dataclass(frozen=True)
class QueryRequest:
    filter: Compiled
    max_records: int
    include_fields: tuple[str, ...] | None
    cursor: str | None


_REQUEST_KEYS = ("filter", "max_records", "include_fields", "cursor")


def _is_condition_on(item: Any, field: str, op: str | None = None) -> bool:
    return isinstance(item, dict) and item.get("field") == field and (op is None or item.get("op") == op)


def prefer_entity(items: Any) -> Any:
    """AttachmentInfo's rule: "if your query supplies both an entityID and a parentID, the entityID will
    take precedence". A filter whose top level (an AND) has ``target_id eq`` loses its top-level
    ``ancestor`` conditions; any other filter is returned as it is (the same object)."""
    if not isinstance(items, list) or not any(_is_condition_on(i, "target_id", "eq") for i in items):
        return items
    kept = [i for i in items if not _is_condition_on(i, "ancestor")]
    return kept if len(kept) < len(items) else items


def parse_query_request(
    body: Any, params: Params | None = None, *, default_max: int = MAX_RECORDS, limit: int = MAX_RECORDS
) -> QueryRequest:
    """Check a query body; its filter is compiled into ``params`` (as ``compile_filter``)."""
    if not isinstance(body, dict):
        raise bad_request("invalid_body", "the body must be a JSON object", None)
    for key in body:
        if key not in _REQUEST_KEYS:
            raise bad_request(
                "unknown_field", f"{_show(key)} is not part of a query; expected {', '.join(_REQUEST_KEYS)}", key
            )
    nodes = body.get("filter")
    if (entity_first := prefer_entity(nodes)) is not nodes:
        compile_filter(nodes)  # checks every condition, the dropped ones too
    compiled = compile_filter(entity_first, params)

    max_records = body.get("max_records")
    if max_records is None:
        max_records = default_max
    elif isinstance(max_records, bool) or not isinstance(max_records, int) or not 1 <= max_records <= limit:
        raise bad_request("invalid_value", f"max_records must be an integer from 1 to {limit}", "max_records")

    include = body.get("include_fields")
    if include is not None:
        if not isinstance(include, list) or not include:
            raise bad_request(
                "invalid_value", "include_fields must be a non-empty list of field names", "include_fields"
            )
        for i, name in enumerate(include):
            spec = FIELDS.get(name) if isinstance(name, str) else None
            if spec is None or spec.column is None:
                raise bad_request(
                    "invalid_field", f"{_show(name)} is not a field of an attachment", f"include_fields[{i}]"
                )
        include = tuple(dict.fromkeys(include))

    cursor = body.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise bad_request("invalid_value", "cursor must be the string a previous page returned", "cursor")
    return QueryRequest(compiled, max_records, include, cursor)
