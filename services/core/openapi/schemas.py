"""The JSON Schemas of the OpenAPI document's components, from the definitions that validate and render. Pure.

Request bodies come from the job contract's msgspec Structs (``NewAttachment``, ``Changes``, ``TargetRef``,
``SetLinksJob``): the ingress validates with the same rules and the worker decodes into the same types.
The attachment record comes from the field catalogue (``FIELDS``, the record's keys ``records.API_FIELDS``)
with each field's nullability from ``contract.AttachmentRow``; the query body from the query language's
operators and limits. What a setting bounds (files per request) is read from the running ``Settings``.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from typing import Any

import msgspec

from services.core import contract, fields, listing, querylang, signing
from services.core.fields import FIELDS, PICKLISTS, FieldSpec
from services.core.records import API_FIELDS
from services.core.settings import Settings
from services.core.validation import CREATE_FIELDS, LINK_TYPES, SOURCES

Schema = dict[str, Any]
REF = "#/components/schemas/{name}"


def ref(name: str) -> Schema:
    return {"$ref": REF.format(name=name)}


def nullable(schema: Schema) -> Schema:
    """``schema`` or null."""
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    return {"anyOf": [schema, {"type": "null"}]}


def ecma_pattern(pattern: str) -> str:
    """A Python regex as JSON Schema's (ECMA-262) dialect has it: a leading ``(?i)``, which ECMA has no
    inline form of, becomes a class of both cases for each letter outside classes and escapes (the
    contract's patterns that use it have no letter inside a class)."""
    if not pattern.startswith("(?i)"):
        return pattern
    text, out, i = pattern[4:], [], 0
    while i < len(text):
        char = text[i]
        if char == "\\":  # an escape, with the digits of \xNN and \uNNNN
            end = i + 2 + {"x": 2, "u": 4}.get(text[i + 1 : i + 2], 0)
        elif char == "[":  # a class, to its first unescaped ]
            end = i + 1
            while end < len(text) and text[end] != "]":
                end += 2 if text[end] == "\\" else 1
            end += 1
        else:
            end = i + 1
            if char.isascii() and char.isalpha():
                char = f"[{char.lower()}{char.upper()}]"
        out.append(char if end == i + 1 else text[i:end])
        i = end
    return "".join(out)


def _ecma_patterns(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: ecma_pattern(v) if k == "pattern" else _ecma_patterns(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_ecma_patterns(v) for v in node]
    return node


def _without_titles(node: Any) -> Any:
    """msgspec's schemas name each Struct in a ``title``; the component's key names it already."""
    if isinstance(node, dict):
        return {k: _without_titles(v) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_without_titles(v) for v in node]
    return node


def _is_datetime(info: msgspec.inspect.Type) -> bool:
    if isinstance(info, msgspec.inspect.UnionType):
        return any(_is_datetime(t) for t in info.types)
    return isinstance(info, msgspec.inspect.DateTimeType)


def _with_datetime_formats(schemas: dict[str, Schema], structs: Iterable[type[msgspec.Struct]]) -> None:
    """msgspec writes a ``datetime`` as a plain string schema; the API's are RFC 3339 date-times."""
    for struct in structs:
        schema = schemas.get(struct.__name__)
        if schema is None:
            continue
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        for f in info.fields:
            if _is_datetime(f.type):
                prop = schema["properties"][f.encode_name]
                for branch in prop.get("anyOf", [prop]):
                    if branch.get("type") == "string":
                        branch["format"] = "date-time"


def contract_schemas(*structs: type[msgspec.Struct]) -> dict[str, Schema]:
    """The components of these Structs (and of what they refer to), as msgspec generates them."""
    _, components = msgspec.json.schema_components(structs, ref_template=REF)
    _with_datetime_formats(components, _referenced_structs(structs))
    return {name: _ecma_patterns(_without_titles(schema)) for name, schema in components.items()}


def _referenced_structs(structs: Iterable[type[msgspec.Struct]]) -> list[type[msgspec.Struct]]:
    found: list[type[msgspec.Struct]] = []

    def visit(info: msgspec.inspect.Type) -> None:
        if isinstance(info, msgspec.inspect.StructType):
            if info.cls in found:
                return
            found.append(info.cls)
            for f in info.fields:
                visit(f.type)
        elif isinstance(info, msgspec.inspect.UnionType):
            for t in info.types:
                visit(t)
        elif isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.SetType, msgspec.inspect.FrozenSetType)):
            visit(info.item_type)

    for struct in structs:
        visit(msgspec.inspect.type_info(struct))
    return found


# --- the attachment record -------------------------------------------------------------------------------

_FIELD_TYPES: dict[str, Schema] = {
    "uuid": {"type": "string", "format": "uuid"},
    "integer": {"type": "integer"},
    "text": {"type": "string"},
    "boolean": {"type": "boolean"},
    "datetime": {"type": "string", "format": "date-time"},
    "text[]": {"type": "array", "items": {"type": "string"}},
    "object": {"type": "object"},
}


def _may_be_null(name: str) -> bool:
    """Whether the row's column may hold null (``AttachmentRow`` has every column, typed as stored)."""
    hint = typing.get_type_hints(contract.AttachmentRow)[name]
    return type(None) in typing.get_args(hint)


def field_schema(spec: FieldSpec, *, with_null: bool) -> Schema:
    if spec.picklist is not None:
        schema: Schema = {"enum": [v.value for v in PICKLISTS[spec.picklist]]}
    else:
        schema = dict(_FIELD_TYPES[spec.type])
    schema = nullable(schema) if with_null else schema
    return {**schema, "description": spec.description}


def _created_by() -> Schema:
    kind, ident = FIELDS["created_by_type"], FIELDS["created_by_id"]
    return {
        "type": "object",
        "description": "Who created the attachment: the token's or API key's actor.",
        "properties": {
            "type": field_schema(kind, with_null=_may_be_null("created_by_type")),
            "id": field_schema(ident, with_null=_may_be_null("created_by_id")),
        },
        "required": ["type", "id"],
        "additionalProperties": False,
    }


def file_links() -> Schema:
    return {
        "type": "object",
        "description": "Signed download links of the stored file and its thumbnails (GET, no credentials); "
        "null where there is no such file (a link attachment, a file that is not an image).",
        "properties": {
            variant: {"type": ["string", "null"], "format": "uri-reference"} for variant in sorted(signing.VARIANTS)
        },
        "required": sorted(signing.VARIANTS),
        "additionalProperties": False,
    }


def record_properties() -> dict[str, Schema]:
    """Every key of the API record, in its order: the catalogue's public columns, ``created_by`` and ``file``."""
    props: dict[str, Schema] = {}
    for name in API_FIELDS:
        if name == "created_by":
            props[name] = _created_by()
        else:
            props[name] = field_schema(FIELDS[name], with_null=_may_be_null(name))
    props["file"] = ref("FileLinks")
    return props


def attachment() -> Schema:
    props = record_properties()
    return {
        "type": "object",
        "description": "An attachment as every route renders it.",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def partial_attachment() -> Schema:
    props = record_properties()
    return {
        "type": "object",
        "description": "An attachment as a query returns it: every key, or its id and the query's include_fields.",
        "properties": props,
        "required": ["id"],
        "additionalProperties": False,
    }


# --- create requests -------------------------------------------------------------------------------------


# What ``encoding.parse_data`` and ``encoding.decode_to`` take: standard, padded base64, bare or in a data: URI.
BASE64_DATA = "^(data:[^,]*;base64,)?([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def new_attachment(contract_schema: Schema, settings: Settings) -> Schema:
    """A create request's JSON object: the contract's ``NewAttachment`` and ``data``, a source that is not
    a field of the record; a filename's extension is one the settings allow."""
    schema = dict(contract_schema)
    props = {name: _described(name, prop) for name, prop in schema["properties"].items()}
    props["filename"] = nullable(filename(settings))
    props["data"] = {
        "type": ["string", "null"],
        "minLength": 4,
        "pattern": BASE64_DATA,
        "contentEncoding": "base64",
        "description": "The file as base64 (or a data: URI). Give exactly one source: data, url, or (multipart) a "
        "file part; a URL, FILE_LINK or FOLDER_LINK attachment gives url only.",
    }
    schema["properties"] = props
    assert set(props) == CREATE_FIELDS, "the create fields and the contract disagree"
    return schema | _create_rules()


def filename(settings: Settings) -> Schema:
    allowed = sorted(settings.allowed_extensions)
    return {
        "type": "string",
        "pattern": ecma_pattern("(?i)\\.(" + "|".join(re.escape(e) for e in allowed) + ")$"),
        "description": f"{FIELDS['filename'].description} Its extension is one of {', '.join(allowed)} "
        "(ATTACHD_ALLOWED_EXTENSIONS) and a known one's content must match it; without one, the file's sniffed "
        "type names it.",
    }


def _create_rules() -> Schema:
    """What ``validation.parse_new_attachment`` holds a JSON create to across its fields: a place (a target,
    or a parent type or attachment to link it to later; target_type and target_id together), and a source
    (a link type's url; else data or url)."""
    return {
        "dependentRequired": {"target_type": ["target_id"], "target_id": ["target_type"]},
        "anyOf": [{"required": ["target_type"]}, {"required": ["parent_type"]}, {"required": ["parent_attachment_id"]}],
        "if": {"properties": {"attachment_type": {"enum": sorted(LINK_TYPES)}}, "required": ["attachment_type"]},
        "then": {"required": ["url"]},
        "else": {"anyOf": [{"required": ["data"]}, {"required": ["url"]}]},
    }


def _described(name: str, prop: Schema) -> Schema:
    spec = FIELDS.get(name)
    if name == "url":
        text = "A link attachment's link, or an http(s) URL the worker fetches the file from."
    elif name == "parent":
        text = "Places the target in the hierarchy under this record."
    elif spec is not None:
        text = spec.description
    else:
        return prop
    return {**prop, "description": text}


_FORM_INTEGER = {"type": "string", "pattern": "^-?[0-9]{1,20}$"}
_FORM_BOOLEAN = {"enum": ["true", "false", "1", "0"]}


def form_field(prop: Schema) -> Schema:
    """A create field as a multipart form or a raw upload's query string carries it: text, which the
    ingress gives the field's type (``validation.coerce_form``)."""
    description = {"description": prop["description"]} if "description" in prop else {}
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    if len(branches) > 1:  # an attachment by id or integer id: either, as text
        return {"anyOf": [form_field(b) for b in branches], **description}
    (branch,) = branches
    if isinstance(branch.get("type"), list):  # ["string", "null"]: a form value is never null
        (kind,) = [t for t in branch["type"] if t != "null"]
        branch = {**branch, "type": kind}
    if branch.get("type") == "integer":
        return {**_FORM_INTEGER, **description}
    if branch.get("type") == "boolean":
        return {**_FORM_BOOLEAN, **description}
    if "$ref" in branch:  # parent: JSON text
        return {"type": "string", "description": 'JSON: {"type": "Ticket", "id": "42"}'}
    return {**{k: v for k, v in branch.items() if k != "default"}, **description}


def form_fields(new: Schema) -> dict[str, Schema]:
    """The create fields a form or a raw upload's query string may carry (not ``data``: its bytes are
    the file part, or the body)."""
    return {name: form_field(prop) for name, prop in new["properties"].items() if name not in SOURCES}


def multipart_create(new: Schema, settings: Settings) -> Schema:
    props = form_fields(new)
    props["mode"] = _mode()
    props["file"] = {
        "type": "array",
        "items": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"},
        "maxItems": settings.max_files_per_request,
        "description": f"The files, one part each (at most {settings.max_files_per_request}). Per file, "
        "name[i] and display_order[i] (i: the part's index among the file parts) override name and "
        "display_order.",
    }
    return {"type": "object", "properties": props}


def _mode() -> Schema:
    return {
        "enum": list(typing.get_args(contract.Mode)),
        "default": "atomic",
        "description": "What one bad file does: atomic fails the request, partial stores the others.",
    }


def bulk_create(settings: Settings) -> Schema:
    return {
        "type": "object",
        "properties": {
            "attachments": {
                "type": "array",
                "items": ref("NewAttachment"),
                "minItems": 1,
                "maxItems": settings.max_files_per_request,
            },
            "mode": _mode(),
        },
        "required": ["attachments"],
        "additionalProperties": False,
    }


# --- the query language ----------------------------------------------------------------------------------


def query_request() -> Schema:
    limit = querylang.MAX_RECORDS
    return {
        "type": "object",
        "description": "A filter, evaluated within the caller's account. Canceled attachments and older versions "
        "stay hidden unless the filter names canceled_at (or version, is_latest).",
        "properties": {
            "filter": {
                "type": "array",
                "items": ref("FilterNode"),
                "minItems": 1,
                "description": "Conditions and groups, all of which must hold.",
            },
            "max_records": {"type": "integer", "minimum": 1, "maximum": limit, "default": limit},
            "include_fields": {
                "type": "array",
                "items": {"enum": [name for name, spec in FIELDS.items() if spec.column is not None]},
                "minItems": 1,
                "description": "Only these keys of each record (and its id).",
            },
            "cursor": {"type": "string", "description": "The next_cursor of the previous page."},
        },
        "required": ["filter"],
        "additionalProperties": False,
    }


def filter_condition() -> Schema:
    queryable = [name for name, spec in FIELDS.items() if spec.queryable]
    return {
        "type": "object",
        "description": "A condition on one field. eq, noteq, in, notIn, exist and notExist apply to every field; "
        "gt, gte, lt and lte to integers, date-times, UUIDs and text; beginsWith, endsWith and contains "
        f"(case-insensitive) to text. in and notIn take 1 to {querylang.MAX_LIST} values; exist and "
        "notExist none. ancestor takes eq and in only.",
        "properties": {
            "field": {"enum": queryable},
            "op": {"enum": list(querylang.OPERATORS)},
            "value": {"description": "Of the field's type."},
        },
        "required": ["field", "op"],
        "additionalProperties": False,
    }


def filter_group() -> Schema:
    return {
        "type": "object",
        "description": f"Conditions and groups joined by and or or; groups nest at most {querylang.MAX_DEPTH} "
        f"deep, and a filter holds at most {querylang.MAX_CONDITIONS} conditions.",
        "properties": {
            "op": {"enum": ["and", "or"]},
            "items": {"type": "array", "items": ref("FilterNode"), "minItems": 1},
        },
        "required": ["op", "items"],
        "additionalProperties": False,
    }


def order_by_pattern() -> str:
    names = "|".join(re.escape(name) for name in listing.ORDERABLE)
    return f"^[-+]?({names})(,[-+]?({names}))*$"


def field_descriptions() -> Schema:
    return {
        "type": "object",
        "properties": {
            "fields": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "type": {"enum": list(typing.get_args(fields.FieldType))},
                        "max_length": {"type": ["integer", "null"]},
                        "queryable": {"type": "boolean"},
                        "writable": {"type": "boolean"},
                        "updatable": {"type": "boolean"},
                        "description": {"type": "string"},
                        "picklist_values": {
                            "type": ["array", "null"],
                            "items": {
                                "type": "object",
                                "properties": {
                                    "value": {"type": "string"},
                                    "label": {"type": "string"},
                                    "sort_order": {"type": "integer"},
                                    "is_default": {"type": "boolean"},
                                    "is_active": {"type": "boolean"},
                                },
                                "required": ["value", "label", "sort_order", "is_default", "is_active"],
                                "additionalProperties": False,
                            },
                        },
                    },
                    "required": [
                        "name",
                        "type",
                        "max_length",
                        "queryable",
                        "writable",
                        "updatable",
                        "description",
                        "picklist_values",
                    ],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["fields"],
        "additionalProperties": False,
    }


# --- answers ---------------------------------------------------------------------------------------------


def _object(props: dict[str, Schema], required: Iterable[str] | None = None, **extra: Any) -> Schema:
    return {
        "type": "object",
        "properties": props,
        "required": list(props if required is None else required),
        "additionalProperties": False,
        **extra,
    }


def error_detail() -> Schema:
    return {
        "type": "object",
        "description": "What was refused: a stable code, a message for people, and the field, parameter or "
        "header at fault when there is one.",
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
        "required": ["code", "message"],
    }


def item_error() -> Schema:
    return {
        "type": "object",
        "description": "One refused file of a many-file upload.",
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "filename": {"type": ["string", "null"]},
            "code": {"type": "string"},
            "message": {"type": "string"},
            "field": {"type": "string"},
        },
        "required": ["index", "filename", "code", "message"],
    }


def error() -> Schema:
    return _object(
        {"error": ref("ErrorDetail"), "errors": {"type": "array", "items": ref("ItemError")}},
        required=["error"],
        description='Every refusal: {"error": {"code", "message", "field"}}; a many-file upload that failed as '
        "a whole lists each refused file in errors.",
    )


UPLOAD_STATES = ("queued", "in_progress", "complete", "failed")


def accepted() -> Schema:
    return _object(
        {
            "id": {"type": "string", "format": "uuid", "description": "The write's job id."},
            "status": {"enum": ["queued", "in_progress"]},
            "status_url": {"type": "string", "description": "GET it for the outcome."},
        },
        description="The write is queued: asked for with Prefer: respond-async, or not done within the "
        "synchronous wait.",
    )


def upload_status() -> Schema:
    return _object(
        {
            "id": {"type": "string", "format": "uuid"},
            "status_url": {"type": "string"},
            "status": {"enum": list(UPLOAD_STATES)},
            "error": ref("ErrorDetail"),
            "errors": {"type": "array", "items": ref("ItemError")},
            "attachments": {"type": "array", "items": ref("Attachment")},
            "attachment": ref("Attachment"),
            "files_q": {"type": ["integer", "null"]},
            "session": ref("SessionRow"),
            "target": ref("PlacedTarget"),
        },
        required=["id", "status_url", "status"],
        description="A write's state; once complete, what it answered (attachment when it made or changed one).",
    )


def bulk_created() -> Schema:
    return _object(
        {
            "attachments": {"type": "array", "items": ref("Attachment")},
            "errors": {"type": "array", "items": ref("ItemError")},
            "files_q": {"type": ["integer", "null"], "description": "Live attachments on the target now."},
        },
        description="A many-file upload's answer: what was stored, and (mode partial) each refused file.",
    )


def page(item: str) -> Schema:
    return _object(
        {
            "attachments": {"type": "array", "items": ref(item)},
            "next_cursor": {"type": ["string", "null"], "description": "Pass it back for the next page; null: none."},
        }
    )


def count() -> Schema:
    return _object({"count": {"type": "integer", "minimum": 0}})


def session_closed(session_row: Schema) -> Schema:
    props = {**session_row["properties"], "attachments": {"type": "array", "items": ref("Attachment")}}
    return _object(props, description="The closed session and the attachments its event announced.")


def links_set() -> Schema:
    return _object({"attachments": {"type": "array", "items": ref("Attachment")}})


def target_placement() -> Schema:
    return _object(
        {"parent": nullable(ref("TargetRef")) | {"description": "null: the target sits at the top."}},
        required=[],
    )


def links_request(set_links_job: Schema) -> Schema:
    ids = dict(set_links_job["properties"]["ids"])
    item = ids["items"]
    return {
        "oneOf": [
            _object({"ids": ids}, description="The field's attachments become exactly these."),
            _object({"id": nullable(item)}, description="A single-file field: its one attachment, or none."),
        ]
    }


def path_parameters() -> dict[str, Schema]:
    """What a path parameter must be beyond the route's own pattern: the job's field it becomes."""
    links = contract_schemas(contract.SetLinksJob)["SetLinksJob"]["properties"]
    session = contract_schemas(contract.CloseSessionJob)["CloseSessionJob"]["properties"]
    return {
        "type": links["target_type"],
        "target_id": {**links["target_id"], "minLength": 1},
        "field": links["field"],
        "token": {**session["session_token"], "minLength": 1},
        "variant": {"enum": sorted(signing.VARIANTS)},
    }


def changes(contract_schema: Schema) -> Schema:
    props = {name: _described(name, prop) for name, prop in contract_schema["properties"].items()}
    return {**contract_schema, "properties": props, "minProperties": 1}


def components(settings: Settings) -> dict[str, Schema]:
    """Every schema component of the document."""
    from_contract = contract_schemas(
        contract.NewAttachment, contract.Changes, contract.SessionRow, contract.PlacedTarget, contract.SetLinksJob
    )
    return {
        "Attachment": attachment(),
        "PartialAttachment": partial_attachment(),
        "FileLinks": file_links(),
        "NewAttachment": new_attachment(from_contract["NewAttachment"], settings),
        "BulkCreateRequest": bulk_create(settings),
        "MultipartCreateRequest": multipart_create(new_attachment(from_contract["NewAttachment"], settings), settings),
        "BulkCreated": bulk_created(),
        "Changes": changes(from_contract["Changes"]),
        "TargetRef": from_contract["TargetRef"],
        "TargetPlacement": target_placement(),
        "PlacedTarget": from_contract["PlacedTarget"],
        "LinksRequest": links_request(from_contract["SetLinksJob"]),
        "LinksSet": links_set(),
        "SessionRow": from_contract["SessionRow"],
        "SessionClosed": session_closed(from_contract["SessionRow"]),
        "QueryRequest": query_request(),
        "FilterNode": {"oneOf": [ref("FilterCondition"), ref("FilterGroup")]},
        "FilterCondition": filter_condition(),
        "FilterGroup": filter_group(),
        "AttachmentPage": page("Attachment"),
        "QueryPage": page("PartialAttachment"),
        "Count": count(),
        "FieldDescriptions": field_descriptions(),
        "Accepted": accepted(),
        "UploadStatus": upload_status(),
        "Error": error(),
        "ErrorDetail": error_detail(),
        "ItemError": item_error(),
    }
