"""The query service: read-only; may point at a read replica."""

from __future__ import annotations

from aiohttp import web

from services.core.settings import Settings
from services.query import downloads, handlers
from services.web import openapi
from services.web.engines import pool_ctx, storage_ctx
from services.web.http import base_app

# An attachment by id (a UUID) or by integer id; uploads and signed links by UUID only.
ID = r"{id:[0-9a-fA-F-]{36}|[0-9]{1,19}}"
UUID_ID = r"{id:[0-9a-fA-F-]{36}}"


def add_routes(app: web.Application) -> None:
    r = app.router
    # Fixed paths first: /v1/attachments/count must not be read as an id.
    r.add_get("/v1/attachments", handlers.list_attachments)
    r.add_get("/v1/attachments/count", handlers.count_attachments)
    r.add_get("/v1/attachments/fields", handlers.fields)
    r.add_post("/v1/attachments/query", handlers.query_attachments)
    r.add_post("/v1/attachments/query/count", handlers.query_count)
    r.add_get(f"/v1/attachments/{ID}", handlers.get_attachment)
    r.add_get(f"/v1/attachments/{ID}/file", downloads.by_bearer)
    r.add_get(f"/v1/attachments/{ID}/file/{{variant}}", downloads.by_bearer)
    r.add_get(f"/v1/files/{UUID_ID}/{{variant}}", downloads.by_signed_link)


def add_engines(app: web.Application) -> None:
    app.cleanup_ctx.extend([pool_ctx, storage_ctx])


def create_app(settings: Settings) -> web.Application:
    app = base_app("query", settings)
    add_engines(app)
    add_routes(app)
    openapi.add_routes(app)
    return app
