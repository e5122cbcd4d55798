"""The OpenAPI document (/v1/openapi.json) and the /docs page: valid OpenAPI 3.1, every route of both routers
with its methods, every field of the definitions it is built from (and nothing else), served alike by both
apps, and real answers of a running service valid against it. (tests/test_schemathesis.py fuzzes it.)"""

from __future__ import annotations

import base64
import re
import typing
import uuid
from html.parser import HTMLParser
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import OpenAPIV31SpecValidator

from services.core import contract, fields, listing, querylang, signing
from services.core.fields import FIELDS, PICKLISTS
from services.core.openapi import all_operations, document
from services.core.openapi.schemas import ecma_pattern
from services.core.records import API_FIELDS
from services.core.settings import Settings, load_settings
from services.core.validation import CHANGE_FIELDS, CREATE_FIELDS, SOURCES
from services.ingress import app as ingress_app
from services.query import app as query_app
from services.query.handlers import LIST_PARAMS
from services.web import openapi as web_openapi
from tests.conftest import JWT_SECRET, jpeg_bytes

SETTINGS = Settings()
DOC = document(web_openapi.native_routes(), SETTINGS, version="test")
SCHEMAS = DOC["components"]["schemas"]
METHODS = {"get", "head", "post", "put", "patch", "delete", "options"}


def router_routes() -> set[tuple[str, str, str]]:
    """(app, METHOD, path template) of every route both apps' add_routes add."""
    return {
        (r.app, r.method, r.path)
        for r in (
            *web_openapi.routes_of("ingress", ingress_app.add_routes),
            *web_openapi.routes_of("query", query_app.add_routes),
        )
    }


def documented() -> set[tuple[str, str, str]]:
    return {
        (op["x-attachd-app"], method.upper(), path)
        for path, item in DOC["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator of one component schema, its $refs resolved in the document."""
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": DOC["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def assert_valid(name: str, instance: Any) -> None:
    errors = sorted(validator(name).iter_errors(instance), key=str)
    assert not errors, f"{name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


# --- the document itself ---------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1():
    assert DOC["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(DOC).validate()


def test_every_route_of_both_routers_is_documented_with_its_methods_and_nothing_else():
    routes = router_routes()
    assert documented() == routes
    # Every operation written down is a route: none is left over from a route that went away.
    assert set(all_operations(SETTINGS)) == {(m, p) for _, m, p in routes}
    ids = [op["operationId"] for item in DOC["paths"].values() for m, op in item.items() if m in METHODS]
    assert len(ids) == len(set(ids))


def test_path_parameters_are_the_routes_own_with_their_patterns():
    for path, item in DOC["paths"].items():
        names = re.findall(r"\{(\w+)\}", path)
        for method, op in item.items():
            declared = [p["name"] for p in op["parameters"] if p["in"] == "path"]
            assert declared == names, f"{method} {path}"
    (id_param,) = [p for p in DOC["paths"]["/v1/attachments/{id}"]["get"]["parameters"] if p["in"] == "path"]
    assert re.fullmatch(id_param["schema"]["pattern"], str(uuid.uuid4()))
    assert not re.fullmatch(id_param["schema"]["pattern"], "count")
    variant = next(p for p in DOC["paths"]["/v1/files/{id}/{variant}"]["get"]["parameters"] if p["name"] == "variant")
    assert variant["schema"]["enum"] == sorted(signing.VARIANTS)


def test_group_patterns_reads_each_parameter_of_a_route_regex():
    regex = r"/v1/a/(?P<id>[0-9a-f-]{36}|\d+)/b/(?P<v>[^{}/]+)/(?P<x>(a|b)[)(]\))"
    assert web_openapi.group_patterns(regex) == {"id": r"[0-9a-f-]{36}|\d+", "v": "[^{}/]+", "x": r"(a|b)[)(]\)"}


def test_every_head_route_answers_as_its_get_without_bodies():
    for path, item in DOC["paths"].items():
        if "get" in item:
            head = item["head"]
            assert set(head["responses"]) == set(item["get"]["responses"]), path
            assert all("content" not in answer for answer in head["responses"].values()), path


def test_the_record_schema_is_the_catalogue():
    record = SCHEMAS["Attachment"]
    assert list(record["properties"]) == [*API_FIELDS, "file"]
    assert record["required"] == [*API_FIELDS, "file"] and record["additionalProperties"] is False
    public = {name for name, spec in FIELDS.items() if spec.column is not None}
    assert set(record["properties"]) == (public - {"created_by_type", "created_by_id"}) | {"created_by", "file"}
    for name, prop in record["properties"].items():
        spec = FIELDS.get(name)
        if spec is None:
            continue
        assert prop["description"] == spec.description
        nullable = type(None) in typing.get_args(typing.get_type_hints(contract.AttachmentRow)[name])
        if spec.picklist:
            assert prop["enum"] == [v.value for v in PICKLISTS[spec.picklist]] + ([None] if nullable else [])
        else:
            kinds = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
            assert ("null" in kinds) == nullable, name
            if spec.type in ("uuid", "datetime"):
                assert prop["format"] == {"uuid": "uuid", "datetime": "date-time"}[spec.type]
    assert SCHEMAS["FileLinks"]["required"] == sorted(signing.VARIANTS)
    assert set(SCHEMAS["PartialAttachment"]["properties"]) == set(record["properties"])


def test_the_create_fields_are_the_validators():
    assert set(SCHEMAS["NewAttachment"]["properties"]) == CREATE_FIELDS
    assert SCHEMAS["NewAttachment"]["additionalProperties"] is False
    form = SCHEMAS["MultipartCreateRequest"]["properties"]
    assert set(form) == (CREATE_FIELDS - set(SOURCES)) | {"mode", "file"}
    create = DOC["paths"]["/v1/attachments"]["post"]
    raw = {p["name"] for p in create["parameters"] if p["in"] == "query"}
    assert raw == CREATE_FIELDS - set(SOURCES)
    assert set(create["requestBody"]["content"]) == {
        "application/json",
        "multipart/form-data",
        "application/octet-stream",
    }
    # The contract's types and limits, as msgspec has them.
    target_type = SCHEMAS["NewAttachment"]["properties"]["target_type"]["anyOf"][0]
    assert target_type["maxLength"] == FIELDS["target_type"].max_length
    assert SCHEMAS["NewAttachment"]["properties"]["created_from"]["enum"] == sorted(
        v.value for v in PICKLISTS["created_from"]
    )


def test_changes_are_the_updatable_fields():
    assert set(SCHEMAS["Changes"]["properties"]) == CHANGE_FIELDS
    assert SCHEMAS["Changes"]["minProperties"] == 1


def test_the_query_body_is_the_query_language():
    condition = SCHEMAS["FilterCondition"]["properties"]
    assert condition["field"]["enum"] == [n for n, s in FIELDS.items() if s.queryable]
    assert condition["op"]["enum"] == list(querylang.OPERATORS)
    request = SCHEMAS["QueryRequest"]["properties"]
    assert tuple(request) == querylang._REQUEST_KEYS
    assert request["max_records"]["maximum"] == querylang.MAX_RECORDS
    assert request["include_fields"]["items"]["enum"] == [n for n, s in FIELDS.items() if s.column is not None]
    assert SCHEMAS["FieldDescriptions"]["properties"]["fields"]["items"]["properties"]["type"]["enum"] == list(
        typing.get_args(fields.FieldType)
    )


def test_the_list_parameters_are_the_handlers():
    def names(path: str) -> set[str]:
        return {p["name"] for p in DOC["paths"][path]["get"]["parameters"] if p["in"] == "query"}

    assert names("/v1/attachments") == LIST_PARAMS
    assert names("/v1/attachments/count") == LIST_PARAMS - {"order_by", "limit", "cursor"}
    params = {p["name"]: p["schema"] for p in DOC["paths"]["/v1/attachments"]["get"]["parameters"]}
    order_by = re.compile(params["order_by"]["pattern"])
    for name in listing.ORDERABLE:
        assert order_by.fullmatch(name) and order_by.fullmatch(f"-{name},seq")
    assert not order_by.fullmatch("sha256")
    assert params["limit"]["maximum"] == listing.MAX_LIMIT


def test_the_limits_are_the_settings():
    doc = document(
        web_openapi.native_routes(),
        Settings(max_files_per_request=3, allowed_extensions=frozenset({"txt"})),
        version="x",
    )
    schemas = doc["components"]["schemas"]
    assert schemas["BulkCreateRequest"]["properties"]["attachments"]["maxItems"] == 3
    assert schemas["MultipartCreateRequest"]["properties"]["file"]["maxItems"] == 3
    pattern = schemas["NewAttachment"]["properties"]["filename"]["pattern"]
    assert re.search(pattern, "notes.TXT") and not re.search(pattern, "notes.pdf")


def test_every_refusal_is_the_error_shape():
    responses = DOC["components"]["responses"]
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                if int(status) >= 400 and method != "head":
                    assert answer == {"$ref": f"#/components/responses/Error{status}"}, f"{method} {path} {status}"
                    schema = responses[f"Error{status}"]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}
            assert {"400", "500", "503"} <= set(op["responses"]), f"{method} {path}"
    detail = SCHEMAS["ErrorDetail"]
    assert set(detail["properties"]) == {"code", "message", "field"} and detail["required"] == ["code", "message"]


def test_security_is_a_bearer_jwt_or_api_key_except_for_signed_links_and_tus_discovery():
    schemes = DOC["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http"} and {s["scheme"] for s in schemes.values()} == {"bearer"}
    assert DOC["security"] == [{"jwt": []}, {"apiKey": []}]
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            if path.startswith("/v1/files/") or method == "options":
                assert op["security"] == [] and "401" not in op["responses"]
            else:
                assert "security" not in op and {"401", "403"} <= set(op["responses"])


def test_patterns_are_ecma_regexes():
    assert ecma_pattern(r"(?i)^https?://[^\x00-\x1f]*$") == r"^[hH][tT][tT][pP][sS]?://[^\x00-\x1f]*$"
    assert "(?i)" not in str(DOC)


# --- served by the apps ----------------------------------------------------------------------------------


class References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append(value)


@pytest.fixture
async def apps(pg_url, redis_url, tmp_path):
    """The ingress and the query service as `attachd ingress` and `attachd query` build them."""
    settings = load_settings(
        {}, database_url=pg_url, redis_url=redis_url, storage_url=f"file://{tmp_path}", jwt_secret=JWT_SECRET
    )
    clients = [TestClient(TestServer(make(settings))) for make in (ingress_app.create_app, query_app.create_app)]
    for client in clients:
        await client.start_server()
    yield clients
    for client in clients:
        await client.close()


async def test_both_apps_serve_the_same_document_and_the_docs_page(apps, service):
    bodies = []
    for client in [*apps, service.client]:
        resp = await client.get("/v1/openapi.json")
        assert resp.status == 200 and resp.content_type == "application/json"
        bodies.append(await resp.json())
    assert bodies[0] == bodies[1]  # the same settings: the same document
    assert bodies[2]["paths"].keys() == bodies[0]["paths"].keys() == DOC["paths"].keys()

    for client in [*apps, service.client]:
        resp = await client.get("/docs")
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        page = References()
        page.feed(await resp.text())
        assert page.urls, "the page references its viewer"
        for url in page.urls:
            # Same origin only: relative, no scheme, no //host.
            assert not re.match(r"^([a-z][a-z0-9+.-]*:|//)", url, re.I), url
            asset = await client.get("/" + url)
            assert asset.status == 200, url
            assert len(await asset.read()) > 0
        bundle = await client.get("/docs/swagger-ui-bundle.js")
        assert bundle.content_type == "text/javascript" and b"SwaggerUIBundle" in await bundle.read()
        assert (await client.get("/docs/../pyproject.toml")).status == 404
        assert (await client.get("/docs/index.html")).status == 404  # only listed files
    script = await (await service.client.get("/docs/page.js")).text()
    assert "validatorUrl: null" in script and "http" not in script


# --- real answers against the document -------------------------------------------------------------------


async def test_real_answers_are_valid_against_the_document(service):
    auth = service.auth()
    jpeg = base64.b64encode(jpeg_bytes(320, 200)).decode()
    text = base64.b64encode(b"hello\n").decode()
    place = {"target_type": "Ticket", "target_id": "7"}

    resp = await service.upload_json({**place, "data": jpeg, "filename": "a.jpg", "session_token": "s-1"})
    assert resp.status == 201
    photo = await resp.json()
    assert_valid("Attachment", photo)
    assert photo["file"]["thumbnail"] is not None

    resp = await service.upload_json(
        {"attachments": [{**place, "data": text, "filename": "b.txt"}, {**place, "data": "AAAA"}], "mode": "partial"}
    )
    assert resp.status == 201
    bulk = await resp.json()
    assert_valid("BulkCreated", bulk)
    assert len(bulk["attachments"]) == 1 and bulk["errors"][0]["code"] == "invalid_extension"

    resp = await service.upload_json({**place, "data": text, "filename": "c.txt"}, headers={"Prefer": "respond-async"})
    assert resp.status == 202
    queued = await resp.json()
    assert_valid("Accepted", queued)
    assert_valid("UploadStatus", await service.finished_upload(queued["status_url"]))

    resp = await service.upload_json({**place, "url": "https://example.com/doc", "attachment_type": "URL"})
    link = await resp.json()
    assert resp.status == 201 and link["file"] == {"original": None, "thumbnail": None, "small": None}
    assert_valid("Attachment", link)

    for variant, status, extra in (("", 200, {}), ("/thumbnail", 206, {"Range": "bytes=0-9"})):
        got = await service.client.get(f"/v1/attachments/{photo['id']}/file{variant}", headers={**auth, **extra})
        assert got.status == status
        assert documented_headers(
            "get", f"/v1/attachments/{{id}}/file{'/{variant}' if variant else ''}", status
        ) <= names(got.headers)
    changed = await service.client.patch(f"/v1/attachments/{photo['id']}", json={"status": "pending"}, headers=auth)
    assert_valid("Attachment", await changed.json())
    lists = await service.client.get("/v1/attachments?target_type=Ticket&target_id=7&limit=2", headers=auth)
    page = await lists.json()
    assert_valid("AttachmentPage", page)
    assert page["next_cursor"] is not None
    assert_valid("Count", await (await service.client.get("/v1/attachments/count", headers=auth)).json())
    assert_valid("FieldDescriptions", await (await service.client.get("/v1/attachments/fields", headers=auth)).json())
    query = {"filter": [{"field": "target_type", "op": "eq", "value": "Ticket"}], "include_fields": ["name"]}
    queried = await (await service.client.post("/v1/attachments/query", json=query, headers=auth)).json()
    assert_valid("QueryPage", queried)
    assert set(queried["attachments"][0]) == {"id", "name"}
    count = await service.client.post("/v1/attachments/query/count", json={"filter": query["filter"]}, headers=auth)
    assert_valid("Count", await count.json())
    assert_valid("UploadStatus", await (await service.client.get(f"/v1/uploads/{photo['id']}", headers=auth)).json())

    placed = await service.client.put(
        "/v1/targets/Ticket/7", json={"parent": {"type": "Project", "id": "1"}}, headers=auth
    )
    assert_valid("PlacedTarget", await placed.json())
    upload = await service.upload_json({"parent_type": "Ticket", "field": "files", "data": text, "filename": "d.txt"})
    unlinked = await upload.json()
    linked = await service.client.put("/v1/targets/Ticket/7/links/files", json={"ids": [unlinked["id"]]}, headers=auth)
    assert linked.status == 200
    assert_valid("LinksSet", await linked.json())
    closed = await service.client.post("/v1/sessions/s-1/close", headers=auth)
    assert closed.status == 200
    assert_valid("SessionClosed", await closed.json())

    for resp in (
        await service.upload_json({**place, "data": text, "colour": "red"}),
        await service.client.get(f"/v1/attachments/{uuid.uuid4()}", headers=auth),
        await service.client.get("/v1/attachments", headers={"Authorization": "Bearer nope"}),
        await service.client.post("/v1/attachments/query", json={"filter": []}, headers=auth),
        await service.upload_json({"attachments": [{**place, "data": "AAAA"}]}),  # atomic: refused as a whole
    ):
        assert resp.status in (400, 401, 404)
        assert_valid("Error", await resp.json())


def documented_headers(method: str, path: str, status: int) -> set[str]:
    """The headers the document says every such answer carries."""
    headers = DOC["paths"][path][method]["responses"][str(status)].get("headers", {})
    return {name.lower() for name, spec in headers.items() if spec.get("required")}


def names(headers: Any) -> set[str]:
    return {name.lower() for name in headers}


async def test_a_resumable_upload_answers_with_the_documented_headers(service):
    auth = {**service.auth(), "Tus-Resumable": "1.0.0"}
    options = await service.client.options("/v1/uploads/tus")
    assert options.status == 204
    assert documented_headers("options", "/v1/uploads/tus", 204) <= names(options.headers)

    body = b"resumed\n"
    meta = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}"
        for k, v in {"target_type": "Ticket", "target_id": "9", "filename": "r.txt"}.items()
    )
    created = await service.client.post(
        "/v1/uploads/tus", headers={**auth, "Upload-Length": str(len(body)), "Upload-Metadata": meta}
    )
    assert created.status == 201
    assert documented_headers("post", "/v1/uploads/tus", 201) <= names(created.headers)
    upload = "/v1/uploads/tus/" + created.headers["Location"].rsplit("/", 1)[1]
    head = await service.client.head(upload, headers=auth)
    assert head.status == 200 and head.headers["Upload-Offset"] == "0"
    assert documented_headers("head", "/v1/uploads/tus/{id}", 200) == {"tus-resumable", "upload-offset"}
    assert documented_headers("head", "/v1/uploads/tus/{id}", 200) <= names(head.headers)
    sent = await service.client.patch(
        upload, data=body, headers={**auth, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    )
    assert sent.status == 204 and sent.headers["Upload-Offset"] == str(len(body))
    assert documented_headers("patch", "/v1/uploads/tus/{id}", 204) <= names(sent.headers)
    status = await service.finished_upload(f"/v1/uploads/{upload.rsplit('/', 1)[1]}")
    assert_valid("UploadStatus", status)
    assert status["status"] == "complete" and status["attachment"]["filename"] == "r.txt"

    stale = await service.client.patch(
        upload, data=b"x", headers={**auth, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    )
    assert str(stale.status) in DOC["paths"]["/v1/uploads/tus/{id}"]["patch"]["responses"]
    assert_valid("Error", await stale.json())
