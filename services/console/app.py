"""The console's routes: its page at ``/console`` and its bundle at ``/console/static/{name}``, each with a strict
Content-Security-Policy. Mounted when ``ATTACHD_CONSOLE`` is on (``attachd dev`` turns it on)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.console.policy import content_security_policy
from services.web.http import SETTINGS

STATIC = Path(__file__).parent / "static"
# Only the built files are served, by name: a path that is not one of them is a 404, never a file lookup.
ASSETS = {"console.js": "text/javascript", "console.css": "text/css", "console.js.LEGAL.txt": "text/plain"}
PAGE = "index.html"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console", page)
    app.router.add_get("/console/", to_page)
    app.router.add_get("/console/static/{name}", asset)


def _headers(request: web.Request, content_type: str) -> dict[str, str]:
    return {
        "Content-Type": f"{content_type}; charset=utf-8",
        "Content-Security-Policy": content_security_policy(request.app[SETTINGS].public_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # Revalidated on each load (ETag / Last-Modified): a new release's bundle is picked up at once.
        "Cache-Control": "no-cache",
    }


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / PAGE, headers=_headers(request, "text/html"))


async def to_page(request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect("/console")


async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC / name, headers=_headers(request, ASSETS[name]))
