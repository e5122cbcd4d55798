"""The OpenAPI 3.1 document of attachd's native API (``/v1/openapi.json``). Pure.

:func:`document` joins the routes as the routers have them (method, path template, each path parameter's
pattern) with each route's operation (``operations``) and the component schemas (``schemas``), which are
generated from the definitions that validate requests and render answers. A route without an operation is
left out, and an operation without a route too; ``tests/test_openapi.py`` holds both sets equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.core.openapi import operations, schemas, tus
from services.core.openapi.operations import ERRORS, JSON
from services.core.settings import Settings

OPENAPI_VERSION = "3.1.0"
# aiohttp's pattern for a {name} without its own.
DEFAULT_SEGMENT = "[^{}/]+"

SECURITY_SCHEMES = {
    "jwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT (HS256 or RS256) with account, sub and scope claims; `attachd token` mints one.",
    },
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`attachd keys create`), sent as the bearer token.",
    },
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}


@dataclass(frozen=True)
class Route:
    """A route as its router has it: the app serving it, its method, its path template
    (``/v1/attachments/{id}``) and the pattern each path parameter matches."""

    app: str
    method: str
    path: str
    patterns: Mapping[str, str] = field(default_factory=dict)


def path_parameter(path: str, name: str, pattern: str) -> dict[str, Any]:
    """A path parameter: what the route matches, and what the handler takes of that."""
    schema: dict[str, Any] = {"type": "string"}
    if pattern != DEFAULT_SEGMENT:
        schema["pattern"] = f"^(?:{pattern})$"
    taken = schemas.path_parameters().get(name, {})
    if "pattern" in schema and "pattern" in taken:
        schema = {"allOf": [schema, taken]}
    else:
        schema |= taken
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": operations.PATH_PARAMETERS.get(f"{path}:{name}") or operations.PATH_PARAMETERS.get(name, name),
    }


def _error_responses() -> dict[str, Any]:
    out = {}
    for status, description in ERRORS.items():
        answer: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schemas.ref("Error")}}}
        if status in (409, 429, 503):
            answer["headers"] = RETRY_AFTER
        out[f"Error{status}"] = answer
    return out


def _with_unmatched(responses: dict[str, Any], route: Route) -> dict[str, Any]:
    """A path parameter that does not match the route's pattern is the router's 404."""
    if not route.patterns or "404" in responses:
        return responses
    answer = {"description": ERRORS[404]} if route.method == "HEAD" else {"$ref": "#/components/responses/Error404"}
    return dict(sorted({**responses, "404": answer}.items()))


METHOD_ORDER = ("get", "head", "post", "put", "patch", "delete", "options")


def _in_method_order(item: dict[str, Any]) -> dict[str, Any]:
    return {method: item[method] for method in sorted(item, key=METHOD_ORDER.index)}


def all_operations(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    """Every route's operation, by (method, path template)."""
    ops = operations.operations(settings)
    for key, op in tus.operations(settings).items():
        ops[key] = operations.without_bodies(op) if key[0] == "HEAD" else op
    return ops


def document(routes: Iterable[Route], settings: Settings, *, version: str) -> dict[str, Any]:
    """The document for these routes, with the limits of ``settings``."""
    specified = all_operations(settings)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op = specified.get((route.method, route.path))
        if op is None:
            continue
        item = paths.setdefault(route.path, {})
        params = [path_parameter(route.path, name, pattern) for name, pattern in route.patterns.items()]
        item[route.method.lower()] = {
            **op,
            "parameters": params + op.get("parameters", []),
            "responses": _with_unmatched(op["responses"], route),
            "x-attachd-app": route.app,
        }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "attachd",
            "version": version,
            "description": "Attachments for any record: uploads (JSON, multipart, raw), thumbnails, filtered reads "
            "and downloads. Writes go to the ingress and reads to the query service; both serve this document. "
            'Every refusal is {"error": {"code", "message", "field"}}; every answer carries X-Request-ID.',
        },
        "servers": [{"url": "/"}],
        "tags": operations.TAGS,
        "security": [{name: []} for name in SECURITY_SCHEMES],
        "paths": {path: _in_method_order(paths[path]) for path in sorted(paths)},
        "components": {
            "schemas": schemas.components(settings),
            "responses": _error_responses(),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
