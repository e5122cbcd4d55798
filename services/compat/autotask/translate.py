"""Autotask <-> native, as plain functions: a child collection's create body to the native create, a row to
an AttachmentInfo item, an Autotask query to the native query language, errors to ``{"errors": [...]}``.
Pure, no I/O: what needs the database (the UUIDs of integer ids) is passed in."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from services.compat.autotask.entities import (
    ATTACHMENT_PARENT_TYPE,
    ATTACHMENT_TYPES,
    BY_ID_FIELD,
    BY_LOWER_NAME,
    BY_NATIVE,
    BY_PARENT_TYPE,
    CREATOR_TYPES,
    FIELD_NAMES,
    NESTED,
    PUBLISH,
    PUBLISH_CODES,
    Parent,
)
from services.core import querylang
from services.core.errors import ApiError

MAX_RECORDS = 500
_INT64 = range(-(2**63), 2**63)
# A parentAttachmentID naming no attachment of the account: a UUID no attachment has, so it matches nothing.
NO_ATTACHMENT = uuid.UUID(int=0)

UPDATE_REFUSED = (
    "Attachments support create, delete, and query functions only. It is not possible to update an attachment."
)
QUERY_ONLY = (
    "This entity is unique. You can only query it. To create or delete attachments, you must use the child "
    "collection URL for each attachment type."
)


def error(message: str, status: int = 400, field: str | None = None) -> ApiError:
    return ApiError("autotask", message, status=status, field=field)


# -- errors ------------------------------------------------------------------------------------------

# Native field names as the Autotask client knows them, for the messages of native errors.
_NATIVE_NAMES = {
    "name": "title",
    "filename": "fullPath",
    "url": "fullPath",
    "content_type": "contentType",
    "attachment_type": "attachmentType",
    "parent_attachment_id": "parentAttachmentID",
    "target_id": "parentID",
    "target_type": "parentType",
    "file": "data",
    "publish": "publish",
    "data": "data",
}
_NATIVE_WORD = re.compile(r"\b(" + "|".join(sorted(_NATIVE_NAMES, key=len, reverse=True)) + r")\b")
_AUTOTASK_FIELDS = frozenset(FIELD_NAMES) | {"data", "MaxRecords", "IncludeFields", "filter", "search"}


def error_body(exc: ApiError) -> dict[str, list[str]]:
    """Autotask's error body, ``{"errors": ["..."]}``: one message that names the field in Autotask's terms."""
    if exc.code == "autotask":  # already in Autotask's words
        return {"errors": [exc.message]}
    field = exc.field.split(".")[0] if exc.field else None
    name = field if field in _AUTOTASK_FIELDS else _NATIVE_NAMES.get(field or "")
    message = _NATIVE_WORD.sub(lambda m: _NATIVE_NAMES[m.group(1)], exc.message)
    if name and name not in message:
        message = f"{name}: {message}"
    return {"errors": [message]}


# -- creates through a child collection ----------------------------------------------------------------

# What a client's model may carry besides the fields: read-only or foreign to attachd, taken and ignored.
_IGNORED = frozenset(
    {
        "id",
        "attachdate",
        "attachedbycontactid",
        "attachedbyresourceid",
        "creatortype",
        "filesize",
        "impersonatorcreatorresourceid",
        "istaskattachment",
        "soapparentpropertyid",
        "userdefinedfields",
        "parenttype",
    }
)


@dataclass(frozen=True)
class NewAttachment:
    """A child collection's create, checked."""

    parent: Parent
    parent_id: int
    title: str
    attachment_type: str
    full_path: str | None
    data: str | None
    content_type: str | None
    publish: str
    parent_attachment: int | None
    placed_under: tuple[str, str] | None  # (native type, id): the parent's own parent (a note's ticket)


def parse_id(value: str, what: str = "id") -> int:
    """An integer id in a path; anything else names nothing (404)."""
    if not re.fullmatch(r"[0-9]{1,19}", value) or int(value) not in _INT64 or int(value) == 0:
        raise error(f"No {what} {value[:40]!r} was found", status=404)
    return int(value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value not in _INT64:
        raise error(f"{name} must be an integer, not {_show(value)}", field=name)
    return value


def _string(value: Any, name: str, length: int) -> str:
    if not isinstance(value, str):
        raise error(f"{name} must be a string", field=name)
    if len(value) > length:
        raise error(f"{name} is longer than {length} characters", field=name)
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _normalized(body: Any) -> dict[str, Any]:
    """The body's fields by their lower-case names (Autotask's are case-insensitive), nulls left out."""
    if not isinstance(body, dict):
        raise error("The request body must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in body.items():
        lower = str(key).lower()
        if lower in out:
            raise error(f"{key} is given twice", field=str(key))
        if value is not None:
            out[lower] = value
    return out


def parse_create(parent: Parent, parent_id: int, body: Any) -> NewAttachment:
    """``POST /<Parents>/{parentId}/Attachments``: check the body and name each thing it asks for."""
    fields = _normalized(body)
    for key in fields:
        if key not in _IGNORED and key != "data" and key not in BY_LOWER_NAME:
            raise error(f"{key} is not a field of an attachment", field=key)

    given_parent = fields.get("parentid")
    if given_parent is not None and _integer(given_parent, "parentID") != parent_id:
        raise error(f"parentID {given_parent} does not match the parent {parent_id} of the URL", field="parentID")
    placed_under = _placement(parent, parent_id, fields)

    attachment_type = fields.get("attachmenttype")
    if attachment_type is None:
        raise error("attachmentType is required", field="attachmentType")
    if attachment_type not in ATTACHMENT_TYPES:
        raise error(f"attachmentType must be one of {', '.join(ATTACHMENT_TYPES)}", field="attachmentType")
    title = fields.get("title")
    if title is None or (isinstance(title, str) and not title.strip()):
        raise error("title is required", field="title")
    title = _string(title, "title", 255)
    full_path = None if "fullpath" not in fields else _string(fields["fullpath"], "fullPath", 2048)
    content_type = None if "contenttype" not in fields else _string(fields["contenttype"], "contentType", 100)

    data = fields.get("data")
    if attachment_type == "FILE_ATTACHMENT":
        if data is None:
            raise error("data is required for a FILE_ATTACHMENT: the file's bytes in base64", field="data")
        if not isinstance(data, str):
            raise error("data must be the file's bytes in base64 (a string)", field="data")
        if full_path is not None and len(full_path) > 255:
            raise error("fullPath is longer than 255 characters", field="fullPath")
    else:
        if data is not None:
            raise error(f"a {attachment_type} attachment carries no data, only its fullPath", field="data")
        if full_path is None or not full_path.strip():
            raise error(f"fullPath is required for a {attachment_type} attachment", field="fullPath")

    publish_code = _integer(fields.get("publish", 1), "publish")
    if publish_code not in PUBLISH:
        raise error("publish must be 1 (All Autotask Users) or 2 (Internal Users Only)", field="publish")
    nested = fields.get("parentattachmentid")
    parent_attachment = None if nested is None else _integer(nested, "parentAttachmentID")
    if parent_attachment is not None and not parent.nests:
        raise error(
            f"{parent.label} attachments do not support nested attachments: parentAttachmentID cannot be set "
            f"through {parent.collection}",
            field="parentAttachmentID",
        )
    return NewAttachment(
        parent=parent,
        parent_id=parent_id,
        title=title.strip(),
        attachment_type=attachment_type,
        full_path=full_path,
        data=data,
        content_type=content_type,
        publish=PUBLISH[publish_code],
        parent_attachment=parent_attachment,
        placed_under=placed_under,
    )


def _placement(parent: Parent, parent_id: int, fields: Mapping[str, Any]) -> tuple[str, str] | None:
    """The parent's own parent from the id fields the body carries (``ticketID`` on a TicketNote attachment
    puts the note under its ticket); its own id field must name the URL's parent."""
    placed = None
    for id_field, other in BY_ID_FIELD.items():
        value = fields.get(id_field.lower())
        if value is None:
            continue
        number = _integer(value, id_field)
        if other is parent:
            if number != parent_id:
                raise error(f"{id_field} {number} does not match the parent {parent_id} of the URL", field=id_field)
        elif id_field in parent.placed_by:
            if placed is not None:
                raise error(f"give one of {' and '.join(parent.placed_by)}, not both", field=id_field)
            placed = (other.native_type, str(number))
        else:
            raise error(f"{id_field} does not apply to {parent.label} attachments", field=id_field)
    return placed


def native_create(new: NewAttachment) -> dict[str, Any]:
    """The native create body (``POST /v1/attachments``) of a checked Autotask create. A nested attachment
    names its parent attachment by integer id and the URL's parent as its target: the native rules hold the
    parent attachment to that record (or one below it) and the record's type to the nesting rule."""
    body: dict[str, Any] = {
        "target_type": new.parent.native_type,
        "target_id": str(new.parent_id),
        "parent_attachment_id": new.parent_attachment,
        "attachment_type": new.attachment_type,
        "name": new.title,
        "publish": new.publish,
        "content_type": new.content_type,
    }
    if new.attachment_type == "FILE_ATTACHMENT":
        body["data"] = new.data
        body["filename"] = new.full_path or new.title
    else:
        body["url"] = new.full_path
    if new.placed_under is not None:
        body["parent"] = {"type": new.placed_under[0], "id": new.placed_under[1]}
    return {k: v for k, v in body.items() if v is not None}


# -- records ---------------------------------------------------------------------------------------------


def _numeric(value: Any) -> int | None:
    text = str(value) if value is not None else ""
    return int(text) if re.fullmatch(r"[0-9]{1,18}", text) else None


def _date(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return None if value is None else str(value)


def nested_parents(rows: Collection[Mapping[str, Any]]) -> set[uuid.UUID]:
    """The attachments the rows hang under: their seqs are needed to render the rows."""
    out: set[uuid.UUID] = set()
    for row in rows:
        if row["parent_attachment_id"] is not None:
            out.add(uuid.UUID(str(row["parent_attachment_id"])))
        if row["target_type"] == NESTED and row["target_id"]:
            out.add(uuid.UUID(row["target_id"]))
    return out


def item(row: Mapping[str, Any], seqs: Mapping[uuid.UUID, int]) -> dict[str, Any]:
    """An AttachmentInfo item of a native row (read with the full column list), every field present.
    ``seqs`` maps the UUIDs of ``nested_parents`` to their integer ids."""
    out: dict[str, Any] = dict.fromkeys(FIELD_NAMES)
    kind, creator = row["created_by_type"], row["created_by_id"]
    out.update(
        id=row["seq"],
        attachDate=_date(row["created_at"]),
        attachmentType=row["attachment_type"],
        contentType=row["content_type"],
        creatorType=2 if kind == "Contact" else 1,
        fileSize=row["size"],
        fullPath=row["filename"] if row["attachment_type"] == "FILE_ATTACHMENT" else row["url"],
        impersonatorCreatorResourceID=_numeric(row["impersonator_id"]),
        publish=PUBLISH_CODES.get(row["publish"], 1),
        title=row["name"],
    )
    out["attachedByContactID" if kind == "Contact" else "attachedByResourceID"] = _numeric(creator)
    for node in row["ancestors"] or ():
        node_type, _, node_id = node.partition(":")
        parent = BY_NATIVE.get(node_type)
        if parent is not None and parent.id_field is not None and out[parent.id_field] is None:
            out[parent.id_field] = _numeric(node_id)
    if row["parent_attachment_id"] is not None:
        out["parentAttachmentID"] = seqs.get(uuid.UUID(str(row["parent_attachment_id"])))
    target_type, target_id = row["target_type"], row["target_id"]
    if target_type == NESTED and target_id:
        out["parentType"], out["parentID"] = ATTACHMENT_PARENT_TYPE, seqs.get(uuid.UUID(target_id))
    elif target_type in BY_NATIVE:
        out["parentType"], out["parentID"] = BY_NATIVE[target_type].parent_type, _numeric(target_id)
    return out


def only(record: dict[str, Any], include: tuple[str, ...] | None) -> dict[str, Any]:
    """IncludeFields: the named fields and ``id``."""
    return record if include is None else {k: record[k] for k in ("id", *include) if k in record}


# -- queries ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    filter: list[Any]
    max_records: int
    include_fields: tuple[str, ...] | None


def parse_query(body: Any) -> Query:
    """``{"filter": [...], "MaxRecords": n, "IncludeFields": [...]}`` (keys in any case)."""
    fields = _normalized(body)
    for key in fields:
        if key not in ("filter", "maxrecords", "includefields"):
            raise error(f"{key} is not part of a query; send filter, MaxRecords and IncludeFields", field=key)
    nodes = fields.get("filter")
    if not isinstance(nodes, list) or not nodes:
        raise error("filter is required: a list of at least one condition", field="filter")
    max_records = _integer(fields.get("maxrecords", MAX_RECORDS), "MaxRecords")
    if not 1 <= max_records <= MAX_RECORDS:
        raise error(f"MaxRecords must be from 1 to {MAX_RECORDS}", field="MaxRecords")
    include = fields.get("includefields")
    names: tuple[str, ...] | None = None
    if include is not None:
        if not isinstance(include, list) or not include:
            raise error("IncludeFields must be a list of field names", field="IncludeFields")
        names = tuple(dict.fromkeys(_field(name, "IncludeFields").name for name in include))
    return Query(nodes, max_records, names)


def _field(name: Any, where: str = "field") -> Any:
    spec = BY_LOWER_NAME.get(name.lower()) if isinstance(name, str) else None
    if spec is None:
        raise error(f"{_show(name)} is not a field of AttachmentInfo", field=where)
    return spec


def attachment_refs(nodes: Any) -> set[int]:
    """The integer ids a filter's parentAttachmentID conditions name (their UUIDs are looked up first)."""
    return {v for cond in _conditions(nodes) if _is(cond, "parentAttachmentID") for v in _ints_of(cond.get("value"))}


def _conditions(nodes: Any) -> Iterator[dict[str, Any]]:
    if isinstance(nodes, list):
        for node in nodes:
            yield from _conditions(node)
    elif isinstance(nodes, dict):
        if "items" in nodes:
            yield from _conditions(nodes["items"])
        else:
            yield nodes


def _is(node: Any, name: str) -> bool:
    return isinstance(node, dict) and isinstance(node.get("field"), str) and node["field"].lower() == name.lower()


def _ints_of(value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        with contextlib.suppress(ApiError):  # a bad value is reported where its condition is translated
            out.append(_integer(v, "value"))
    return out


def prefer_entity(nodes: list[Any]) -> list[Any]:
    """ "If your query supplies both an entityID and a parentID, the entityID will take precedence": a
    top-level entity id condition (ticketID, ...) drops the top-level parentID conditions."""
    if not any(isinstance(n, dict) and str(n.get("field", "")).lower() in _ENTITY_FIELDS for n in nodes):
        return nodes
    return [n for n in nodes if not _is(n, "parentID")]


_ENTITY_FIELDS = frozenset(name.lower() for name in BY_ID_FIELD)
_OPS = {op.lower(): op for op in querylang.OPERATORS}  # Autotask reads its operators in any case
_NEGATIVE = frozenset({"noteq", "notIn", "notExist"})
_MAX_DEPTH = 16


def native_filter(
    nodes: list[Any], refs: Mapping[int, uuid.UUID] | None = None, scope: Parent | None = None
) -> list[Any]:
    """An Autotask filter in the native query language (services.core.querylang). ``refs`` maps the integer
    ids of ``attachment_refs`` to UUIDs; ``scope`` limits an ``<Entity>Attachments`` query to its parent type."""
    translated = [_node(n, f"filter[{i}]", refs or {}, 0) for i, n in enumerate(prefer_entity(nodes))]
    if scope is not None:
        translated.append({"field": "target_type", "op": "eq", "value": scope.native_type})
    return translated


def _node(node: Any, path: str, refs: Mapping[int, uuid.UUID], depth: int) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise error(f"{path} must be a condition or a group of conditions", field="filter")
    keys = {str(k).lower(): v for k, v in node.items()}
    op_name = keys.get("op")
    op = _OPS.get(op_name.lower()) if isinstance(op_name, str) else None
    if "items" in keys or (isinstance(op_name, str) and op_name.lower() in ("and", "or")):
        if not isinstance(op_name, str) or op_name.lower() not in ("and", "or"):
            raise error(f"{path}: a group's op is and or or, not {_show(op_name)}", field="filter")
        items = keys.get("items")
        if not isinstance(items, list) or not items:
            raise error(f"{path}: items must be a non-empty list", field="filter")
        if depth >= _MAX_DEPTH:
            raise error(f"groups nest at most {_MAX_DEPTH} deep", field="filter")
        return {
            "op": op_name.lower(),
            "items": [_node(n, f"{path}.items[{i}]", refs, depth + 1) for i, n in enumerate(items)],
        }
    if keys.get("udf"):
        raise error("AttachmentInfo has no user-defined fields", field="filter")
    extra = set(keys) - {"field", "op", "value", "udf"}
    if extra:
        raise error(f"{path}: {sorted(extra)[0]} is not part of a condition", field="filter")
    if op is None:
        raise error(f"{path}: unknown operator {_show(op_name)}; use one of {', '.join(_OPS.values())}", field="filter")
    spec = _field(keys.get("field"), "filter")
    if not spec.queryable:
        raise error(f"{spec.name} cannot be queried", field=spec.name)
    value = keys.get("value")
    if op in ("exist", "notExist"):
        value = None
    elif op in ("in", "notIn"):
        if not isinstance(value, list) or not value:
            raise error(f"{path}: {op} takes a list of values", field=spec.name)
    elif value is None or isinstance(value, list):
        raise error(f"{path}: {op} takes one value", field=spec.name)
    return _condition(spec.name, op, value, refs)


def _cond(field: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"field": field, "op": op} if op in ("exist", "notExist") else {"field": field, "op": op, "value": value}


def _map(value: Any, convert: Any) -> Any:
    """``convert`` applied to a condition's value or each of its values (exist and notExist have none)."""
    if value is None:
        return None
    return [convert(v) for v in value] if isinstance(value, list) else convert(value)


def _only(name: str, op: str, allowed: Collection[str]) -> None:
    if op not in allowed:
        raise error(f"{op} does not apply to {name}; use {', '.join(allowed)}", field=name)


def _condition(name: str, op: str, value: Any, refs: Mapping[int, uuid.UUID]) -> dict[str, Any]:
    def ints(v: Any) -> int:
        return _integer(v, name)

    if name in BY_ID_FIELD:  # everything under that entity, its children's attachments included
        _only(name, op, ("eq", "in"))
        native_type = BY_ID_FIELD[name].native_type
        return _cond("ancestor", op, _map(value, lambda v: f"{native_type}:{ints(v)}"))
    if name == "id":
        return _cond("seq", op, _map(value, ints))
    if name == "parentID":
        _only(name, op, ("eq", "noteq", "in", "notIn", "exist", "notExist"))
        return _cond("target_id", op, _map(value, lambda v: str(ints(v))))
    if name == "parentType":
        _only(name, op, ("eq", "noteq", "in", "notIn", "exist", "notExist"))
        return _cond("target_type", op, _map(value, lambda v: _parent_type(ints(v))))
    if name == "parentAttachmentID":
        _only(name, op, ("eq", "noteq", "in", "notIn", "exist", "notExist"))
        return _cond("parent_attachment_id", op, _map(value, lambda v: str(refs.get(ints(v), NO_ATTACHMENT))))
    if name == "attachDate":
        _only(name, op, ("eq", "noteq", "gt", "gte", "lt", "lte", "in", "notIn", "exist", "notExist"))
        return _cond("created_at", op, _map(value, _datetime))
    if name == "attachmentType":
        _only(name, op, ("eq", "noteq", "in", "notIn", "exist", "notExist"))
        return _cond("attachment_type", op, value)
    if name == "publish":
        _only(name, op, ("eq", "noteq", "in", "notIn", "exist", "notExist"))
        return _cond("publish", op, _map(value, lambda v: _publish(ints(v))))
    if name == "creatorType":
        _only(name, op, ("eq", "noteq", "in", "notIn"))
        kinds = [k for v in (value if isinstance(value, list) else [value]) for k in _creator_type(ints(v))]
        return _cond("created_by_type", "notIn" if op in _NEGATIVE else "in", kinds)
    if name in ("attachedByResourceID", "attachedByContactID"):
        _only(name, op, ("eq", "in", "exist", "notExist"))
        kinds = list(CREATOR_TYPES[2 if name == "attachedByContactID" else 1])
        if op in ("exist", "notExist"):
            return _cond("created_by_type", "in" if op == "exist" else "notIn", kinds)
        ids = _map(value, lambda v: str(ints(v)))
        return {"op": "and", "items": [_cond("created_by_type", "in", kinds), _cond("created_by_id", op, ids)]}
    if name == "impersonatorCreatorResourceID":
        _only(name, op, ("eq", "noteq", "in", "notIn", "exist", "notExist"))
        return _cond("impersonator_id", op, _map(value, lambda v: str(ints(v))))
    if name == "fullPath":  # a file's name, a link's path or URL
        both = [_cond("filename", op, value), _cond("url", op, value)]
        return {"op": "and" if op in _NEGATIVE else "or", "items": both}
    native = {"title": "name", "contentType": "content_type"}[name]
    return _cond(native, op, value)


def _parent_type(code: int) -> str:
    if code == ATTACHMENT_PARENT_TYPE:
        return NESTED
    if code not in BY_PARENT_TYPE:
        raise error(f"{code} is not a parentType value (see entityInformation/fields)", field="parentType")
    return BY_PARENT_TYPE[code].native_type


def _publish(code: int) -> str:
    if code not in PUBLISH:
        raise error("publish is 1 (All Autotask Users) or 2 (Internal Users Only)", field="publish")
    return PUBLISH[code]


def _creator_type(code: int) -> tuple[str, ...]:
    if code not in CREATOR_TYPES:
        raise error("creatorType is 1 (Resource) or 2 (Contact)", field="creatorType")
    return CREATOR_TYPES[code]


def _datetime(value: Any) -> str:
    """Autotask's date-times are UTC; one without an offset (or a bare date) is read as UTC."""
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return parsed.isoformat()
    raise error(f"attachDate takes a date-time like 2024-05-01T12:00:00Z, not {_show(value)}", field="attachDate")
