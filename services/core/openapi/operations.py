"""Each native route's operation: parameters, body and answers, keyed by (method, path template). Pure.

Path parameters are not here: ``services.core.openapi.document`` takes them from the routers (their names
and the patterns the routes match). A HEAD route gets its GET's operation without bodies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.core import contract, listing
from services.core.auth import READ, WRITE
from services.core.fields import FIELDS
from services.core.openapi import schemas
from services.core.openapi.schemas import Schema, ref
from services.core.settings import Settings

JSON = "application/json"

# Every status an error may answer with, and when. Each is the error shape.
ERRORS: dict[int, str] = {
    400: "The request is invalid: a field, parameter, header or the URL (`field` names what, when it can).",
    401: "No valid credential: send `Authorization: Bearer <JWT or API key>`.",
    403: "The credential lacks the scope this route needs (or a download link is invalid or expired).",
    404: "No such attachment, upload or session in the caller's account, or the path matches no route.",
    408: "The request body arrived too slowly.",
    409: "A request with this Idempotency-Key is still being received; retry after Retry-After.",
    411: "A multipart or raw upload without Content-Length while the account has a byte budget.",
    413: "The body, or a file, is larger than allowed.",
    415: "The Content-Type or Content-Encoding of the body is not one this route takes.",
    410: "The resumable upload expired before its last byte arrived.",
    412: "The request does not speak tus 1.0.0 (Tus-Resumable).",
    416: "The Range lies wholly past the end of the file.",
    422: "The file could not be used: an image that does not decode, a URL that could not be fetched.",
    423: "Another request is writing this resumable upload; HEAD it and resume after Retry-After.",
    429: "The account's byte budget for the window is spent; retry after Retry-After.",
    460: "The chunk's bytes do not match its Upload-Checksum; it was dropped (the offset is unchanged).",
    500: "A fault on attachd's side.",
    503: "attachd cannot reach its database or queue, or is shutting down; retry after Retry-After.",
}
# Refusals any route may answer with: the URL or Content-Encoding (checked before the route), a fault, a
# dependency that is away.
ANY_ROUTE = (400, 415, 500, 503)
AUTHENTICATED = (401, 403)
READS_BODY = (408, 413)
# What a write's outcome may be refused with by the worker that runs it.
WORKER = (400, 404, 413, 422)

TAGS = [
    {"name": "Writes", "description": "Served by the ingress: each write is a job; the answer is its outcome."},
    {"name": "Reads", "description": "Served by the query service, within the caller's account."},
    {"name": "Downloads", "description": "Stored bytes, by credential or by a signed link; Range and ETag."},
    {
        "name": "Resumable uploads",
        "description": "tus 1.0 (served by the ingress): an upload that survives a dropped connection, resumed "
        "from its offset by any tus client; its last byte makes it an ordinary ingest job.",
    },
]

PATH_PARAMETERS: dict[str, str] = {
    "id": "The attachment: its id (a UUID) or, where the pattern allows, its integer id (seq).",
    "/v1/uploads/tus/{id}:id": "The resumable upload (its Location); also its job's id once complete.",
    "/v1/uploads/{id}:id": "The write's job id (a single upload's is its attachment's id).",
    "variant": "Which file: the original or a thumbnail (JPEG).",
    "token": "The session_token the uploads of the session carried.",
    "type": FIELDS["target_type"].description,
    "target_id": FIELDS["target_id"].description,
    "field": "The target's attachment field (letters, digits and _).",
}


def error_refs(statuses: Iterable[int]) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/Error{s}"} for s in sorted(set(statuses))}


def json_body(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def operation(
    op_id: str,
    summary: str,
    *,
    tag: str,
    scope: str | None,
    ok: dict[str, Any],
    errors: Iterable[int] = (),
    params: Iterable[dict[str, Any]] = (),
    body: dict[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag]}
    if scope is not None:
        op["description"] = f"{description}\n\nNeeds the `{scope}` scope.".strip()
        op["x-attachd-scope"] = scope
    else:
        op["description"] = description
        op["security"] = []
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = body
    statuses = set(ANY_ROUTE) | set(errors) | (set(AUTHENTICATED) if scope is not None else set())
    op["responses"] = {**ok, **error_refs(statuses)}
    return op


def query(name: str, schema: Schema, description: str, *, required: bool = False) -> dict[str, Any]:
    param = {"name": name, "in": "query", "schema": schema, "description": description}
    return param | {"required": True} if required else param


def header(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "schema": schema, "description": description}


IDEMPOTENCY_KEY = header(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255},
    "A retry with the same key (same account, method and path) gets the first request's answer; the write "
    "is done once.",
)
PREFER = header(
    "Prefer",
    {"enum": ["respond-async"]},
    "respond-async: answer 202 at once with the job's status_url instead of waiting for the outcome.",
)
WRITE_HEADERS = (IDEMPOTENCY_KEY, PREFER)
# OpenAPI links: where an answer's id may be used next (clients and fuzzers follow them).
UPLOAD_LINK = {"getUpload": {"operationId": "getUpload", "parameters": {"id": "$response.body#/id"}}}
ATTACHMENT_LINKS = {
    name: {"operationId": name, "parameters": {"id": "$response.body#/id"}}
    for name in ("getAttachment", "updateAttachment", "deleteAttachment", "downloadFile", "downloadVariant")
}
ACCEPTED = {
    "202": {
        "description": "Queued (Prefer: respond-async, or not done within the synchronous wait).",
        "headers": {"Location": {"schema": {"type": "string"}, "description": "The status URL.", "required": True}},
        "content": {JSON: {"schema": ref("Accepted")}},
        "links": UPLOAD_LINK,
    }
}


def _boolean(name: str, description: str) -> dict[str, Any]:
    return query(name, {"type": "boolean", "default": False}, description)


def list_parameters(*, paged: bool) -> list[dict[str, Any]]:
    target_type = FIELDS["target_type"]
    params = [
        query(
            "target_type",
            {"type": "string", "maxLength": target_type.max_length, "pattern": "^[A-Za-z][A-Za-z0-9_:.\\-]*$"},
            target_type.description,
        ),
        query(
            "target_id",
            {"type": "string", "maxLength": FIELDS["target_id"].max_length, "pattern": "^[^\\x00-\\x1f]*$"},
            "Needs target_type. " + FIELDS["target_id"].description,
        ),
        _boolean("descendants", "Also what sits anywhere under the target (needs target_type and target_id)."),
        query(
            "ancestor",
            {"type": "string", "maxLength": FIELDS["ancestor"].max_length, "pattern": "^[A-Za-z][A-Za-z0-9_.\\-]*:.+$"},
            "Attachments anywhere under this record, as Type:id (e.g. Ticket:42).",
        ),
        query("versions", {"enum": ["latest", "all"], "default": "latest"}, "latest, or every version of each file."),
        _boolean("include_canceled", "Deleted attachments too."),
        query("available", {"type": "boolean"}, "true: only attachments offered to users; false: only hidden ones."),
    ]
    if paged:
        params += [
            query(
                "order_by",
                {"type": "string", "pattern": schemas.order_by_pattern(), "default": listing.DEFAULT_ORDER},
                f"Comma-separated keys of {', '.join(listing.ORDERABLE)}; - before one sorts it descending.",
            ),
            query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": listing.MAX_LIMIT, "default": listing.DEFAULT_LIMIT},
                "Records per page.",
            ),
            query("cursor", {"type": "string"}, "The next_cursor of the previous page (same order_by)."),
        ]
    return params


def _download_params() -> list[dict[str, Any]]:
    return [
        _boolean("download", "Send it as an attachment to save, whatever its type."),
        header("Range", {"type": "string"}, "One byte range (bytes=first-last, bytes=first-, bytes=-suffix)."),
        header("If-None-Match", {"type": "string"}, "The ETag held: 304 when it still matches."),
        header("If-Range", {"type": "string"}, "The ETag a Range is for: the whole file when it no longer matches."),
    ]


def _file_answers() -> dict[str, Any]:
    headers = {
        "ETag": {"schema": {"type": "string"}, "required": True},
        "Content-Disposition": {"schema": {"type": "string"}, "required": True},
        "Accept-Ranges": {"schema": {"const": "bytes"}, "required": True},
    }
    binary = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    return {
        "200": {"description": "The bytes.", "headers": headers, "content": binary},
        "206": {
            "description": "The requested range of the bytes.",
            "headers": {**headers, "Content-Range": {"schema": {"type": "string"}, "required": True}},
            "content": binary,
        },
        "304": {"description": "Not modified (If-None-Match).", "headers": headers},
    }


def _create(settings: Settings) -> dict[str, Any]:
    raw_fields = schemas.form_fields(schemas.new_attachment(_new_attachment_contract(), settings))
    binary = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
    return operation(
        "createAttachments",
        "Upload attachments",
        tag="Writes",
        scope=WRITE,
        description="One attachment as JSON (its bytes as base64 `data`, or a `url` to fetch, or a link), many "
        'as `{"attachments": [...]}`, files as multipart/form-data, or one file as the raw body with its '
        "fields in the query string. The answer waits for the outcome (up to ATTACHD_SYNC_WAIT_S, "
        f"{settings.sync_wait_s:g} s here). JSON bodies up to {settings.max_json_bytes} bytes; files up to "
        f"{settings.max_file_bytes} bytes unless the account has its own limit.",
        params=[
            *WRITE_HEADERS,
            *(
                query(name, schema, "Raw body only: " + schema.get("description", name))
                for name, schema in raw_fields.items()
            ),
        ],
        body={
            "required": True,
            "content": {
                JSON: {"schema": {"oneOf": [ref("NewAttachment"), ref("BulkCreateRequest")]}},
                "multipart/form-data": {
                    "schema": ref("MultipartCreateRequest"),
                    "encoding": {"file": {"contentType": "application/octet-stream"}},
                },
                "application/octet-stream": {"schema": binary},
            },
        },
        ok={
            "201": json_body(
                {"oneOf": [ref("Attachment"), ref("BulkCreated")]},
                "Stored: the attachment, or (many files, or mode given) each one and the refused ones.",
            )
            | {"links": ATTACHMENT_LINKS | UPLOAD_LINK},
            **ACCEPTED,
        },
        errors=(*READS_BODY, *WORKER, 409, 411, 429),
    )


def _new_attachment_contract() -> Schema:
    return schemas.contract_schemas(contract.NewAttachment)["NewAttachment"]


def writes(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    changed = json_body(ref("Attachment"), "Changed: the attachment as it is now.")
    return {
        ("POST", "/v1/attachments"): _create(settings),
        ("PATCH", "/v1/attachments/{id}"): operation(
            "updateAttachment",
            "Change an attachment",
            tag="Writes",
            scope=WRITE,
            description="Change name, display_order, available or status (null clears it).",
            params=WRITE_HEADERS,
            body={"required": True, "content": {JSON: {"schema": ref("Changes")}}},
            ok={"200": changed, **ACCEPTED},
            errors=(*READS_BODY, *WORKER, 409),
        ),
        ("DELETE", "/v1/attachments/{id}"): operation(
            "deleteAttachment",
            "Delete an attachment",
            tag="Writes",
            scope=WRITE,
            description="A soft delete: reads stop showing it (include_canceled shows it); its bytes are purged later.",
            params=WRITE_HEADERS,
            ok={"204": {"description": "Deleted."}, **ACCEPTED},
            errors=(*WORKER, 409),
        ),
        ("GET", "/v1/uploads/{id}"): operation(
            "getUpload",
            "A write's status",
            tag="Writes",
            scope=READ,
            description="The state of any write by its job id (the status_url of a 202), and once complete what "
            "it answered.",
            ok={"200": json_body(ref("UploadStatus"), "The write's state.")},
            errors=(404,),
        ),
        ("POST", "/v1/sessions/{token}/close"): operation(
            "closeSession",
            "Close an upload session",
            tag="Writes",
            scope=WRITE,
            description="One event announces every upload that carried this session_token.",
            params=WRITE_HEADERS,
            ok={"200": json_body(ref("SessionClosed"), "Closed."), **ACCEPTED},
            errors=(*WORKER, 409),
        ),
        ("PUT", "/v1/targets/{type}/{target_id}"): operation(
            "putTarget",
            "Place a target in the hierarchy",
            tag="Writes",
            scope=WRITE,
            description="Its attachments, and those of everything under it, become reachable by ancestor.",
            params=WRITE_HEADERS,
            body={"required": True, "content": {JSON: {"schema": ref("TargetPlacement")}}},
            ok={"200": json_body(ref("PlacedTarget"), "Placed."), **ACCEPTED},
            errors=(*READS_BODY, *WORKER, 409),
        ),
        ("PUT", "/v1/targets/{type}/{target_id}/links/{field}"): operation(
            "setLinks",
            "Set a field's attachments",
            tag="Writes",
            scope=WRITE,
            description="The field's list becomes exactly these uploads; those taken off it are no longer on the "
            "target.",
            params=WRITE_HEADERS,
            body={"required": True, "content": {JSON: {"schema": ref("LinksRequest")}}},
            ok={"200": json_body(ref("LinksSet"), "The field's attachments now."), **ACCEPTED},
            errors=(*READS_BODY, *WORKER, 409),
        ),
    }


def reads() -> dict[tuple[str, str], dict[str, Any]]:
    query_body = {"required": True, "content": {JSON: {"schema": ref("QueryRequest")}}}
    file_params = _download_params()
    return {
        ("GET", "/v1/attachments"): operation(
            "listAttachments",
            "List attachments",
            tag="Reads",
            scope=READ,
            description="A page of the account's live, latest attachments, filtered and ordered; unknown "
            "parameters are refused.",
            params=list_parameters(paged=True),
            ok={"200": json_body(ref("AttachmentPage"), "A page.")},
        ),
        ("GET", "/v1/attachments/count"): operation(
            "countAttachments",
            "Count attachments",
            tag="Reads",
            scope=READ,
            params=list_parameters(paged=False),
            ok={"200": json_body(ref("Count"), "How many the same filter lists.")},
        ),
        ("GET", "/v1/attachments/fields"): operation(
            "listFields",
            "The field catalogue",
            tag="Reads",
            scope=READ,
            description="Every field of an attachment: its type, length, whether it may be queried, set or "
            "changed, and its picklist.",
            ok={"200": json_body(ref("FieldDescriptions"), "The fields.")},
        ),
        ("POST", "/v1/attachments/query"): operation(
            "queryAttachments",
            "Query attachments",
            tag="Reads",
            scope=READ,
            description="Attachments matching a filter of conditions and and/or groups, in id order.",
            body=query_body,
            ok={"200": json_body(ref("QueryPage"), "A page.")},
            errors=READS_BODY,
        ),
        ("POST", "/v1/attachments/query/count"): operation(
            "countQuery",
            "Count a query's attachments",
            tag="Reads",
            scope=READ,
            body=query_body,
            ok={"200": json_body(ref("Count"), "How many match.")},
            errors=READS_BODY,
        ),
        ("GET", "/v1/attachments/{id}"): operation(
            "getAttachment",
            "Get an attachment",
            tag="Reads",
            scope=READ,
            params=[_boolean("include_canceled", "A deleted attachment too.")],
            ok={"200": json_body(ref("Attachment"), "The attachment.")},
            errors=(404,),
        ),
        ("GET", "/v1/attachments/{id}/file"): operation(
            "downloadFile",
            "Download an attachment's file",
            tag="Downloads",
            scope=READ,
            params=file_params,
            ok=_file_answers(),
            errors=(404, 416),
        ),
        ("GET", "/v1/attachments/{id}/file/{variant}"): operation(
            "downloadVariant",
            "Download a file or one of its thumbnails",
            tag="Downloads",
            scope=READ,
            params=file_params,
            ok=_file_answers(),
            errors=(404, 416),
        ),
        ("GET", "/v1/files/{id}/{variant}"): operation(
            "downloadSigned",
            "Download by a signed link",
            tag="Downloads",
            scope=None,
            description="The links in a record's file object: no credential, valid until expires.",
            params=[
                query(
                    "expires", {"type": "string", "pattern": "^[0-9]{1,12}$"}, "Unix time the link ends.", required=True
                ),
                query("signature", {"type": "string"}, "The link's signature.", required=True),
                *file_params,
            ],
            ok=_file_answers(),
            errors=(403, 404, 416),
        ),
    }


def without_bodies(op: dict[str, Any]) -> dict[str, Any]:
    """A HEAD operation: its answers, errors included, are headers only."""
    responses = {}
    for status, answer in op["responses"].items():
        if "$ref" in answer:
            responses[status] = {"description": ERRORS[int(status)]}
        else:
            responses[status] = {k: v for k, v in answer.items() if k != "content"}
    return {**op, "responses": responses}


def head_of(get: dict[str, Any]) -> dict[str, Any]:
    """The HEAD of a GET route: the same parameters and statuses, headers only."""
    return without_bodies(
        {**get, "operationId": get["operationId"] + "Head", "summary": get["summary"] + " (headers only)"}
    )


def operations(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    ops = {**writes(settings), **reads()}
    for (method, path), op in list(ops.items()):
        if method == "GET":
            ops[("HEAD", path)] = head_of(op)
    return ops
