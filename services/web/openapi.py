"""``/v1/openapi.json`` and the ``/docs`` page, on every attachd app.

The document describes the native routes of both apps, read from their own ``add_routes`` (so one document,
whichever app answers); the page is Swagger UI, shipped in the package (``static/docs``, ``make
docs-viewer``), loading nothing from anywhere else.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import orjson
from aiohttp import web

from services.core import openapi
from services.core.errors import ApiError
from services.web.http import SETTINGS

DOCUMENT_PATH = "/v1/openapi.json"
PAGE_PATH = "/docs"
VIEWER = Path(__file__).resolve().parent / "static" / "docs"
# The files /docs/<name> serves, and their types; nothing else under the directory is reachable.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "LICENSE": "text/plain",
    "NOTICE": "text/plain",
    "VERSION": "text/plain",
    "swagger-ui-bundle.js.LICENSE.txt": "text/plain",
}
# The page runs the bundled viewer only: scripts, styles, images and the document from this origin. (Styles
# may be inline: the viewer sets some; data: images are its icons.)
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The document as JSON, made on its first request (a dict set up with the routes, filled in once started).
_DOCUMENT = web.AppKey("openapi_document", dict)


def group_patterns(regex: str) -> dict[str, str]:
    """Each named group's own pattern in a route's regex: ``/a/(?P<id>[0-9]+)`` -> ``{"id": "[0-9]+"}``."""
    out: dict[str, str] = {}
    start = 0
    while (opening := regex.find("(?P<", start)) != -1:
        name_end = regex.index(">", opening)
        body_start = i = name_end + 1
        depth, in_class = 1, False
        while depth:
            char = regex[i]
            if char == "\\":
                i += 2
                continue
            if in_class:
                in_class = char != "]"
            elif char == "[":
                in_class = True
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            i += 1
        out[regex[opening + 4 : name_end]] = regex[body_start : i - 1]
        start = i
    return out


def routes_of(app_name: str, add_routes: Callable[[web.Application], None]) -> list[openapi.Route]:
    """The routes ``add_routes`` adds to an app, as the document builder takes them."""
    app = web.Application()
    add_routes(app)
    out = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or resource.canonical.startswith(PAGE_PATH) or resource.canonical == DOCUMENT_PATH:
            continue
        info = resource.get_info()
        patterns = group_patterns(info["pattern"].pattern) if "pattern" in info else {}
        out.append(openapi.Route(app_name, route.method, resource.canonical, patterns))
    return out


@functools.cache
def native_routes() -> tuple[openapi.Route, ...]:
    """Every native route of the ingress and of the query service."""
    from services.ingress import app as ingress
    from services.query import app as query

    return (*routes_of("ingress", ingress.add_routes), *routes_of("query", query.add_routes))


def _version() -> str:
    try:
        return importlib.metadata.version("attachd")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


def document_bytes(app: web.Application) -> bytes:
    """The document as this app serves it (its settings' limits), made once."""
    made: dict[str, bytes] = app[_DOCUMENT]
    if "json" not in made:
        made["json"] = orjson.dumps(openapi.document(native_routes(), app[SETTINGS], version=_version()))
    return made["json"]


async def serve_document(request: web.Request) -> web.Response:
    return web.Response(
        body=document_bytes(request.app),
        content_type="application/json",
        headers={"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"},
    )


async def serve_page(request: web.Request) -> web.StreamResponse:
    headers = {**PAGE_HEADERS, "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"}
    return web.FileResponse(VIEWER / "index.html", headers=headers)


async def serve_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    kind = ASSETS.get(name)
    if kind is None:
        raise ApiError("not_found", "no such file", status=404)
    return web.FileResponse(
        VIEWER / name,
        headers={"Content-Type": kind, "Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


async def page_slash(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently(PAGE_PATH)


def add_routes(app: web.Application) -> None:
    """``GET /v1/openapi.json``, ``GET /docs`` and the page's files under ``/docs/``."""
    app[_DOCUMENT] = {}
    app.router.add_get(DOCUMENT_PATH, serve_document)
    app.router.add_get(PAGE_PATH, serve_page)
    app.router.add_get(PAGE_PATH + "/", page_slash)
    app.router.add_get(PAGE_PATH + "/{name}", serve_asset)
