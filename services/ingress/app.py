"""The ingress app: thin writes. It talks to Redis and storage; to Postgres only to check API keys and to
answer for uploads Redis has forgotten (engines.lazy_pool_ctx), so JWT uploads go on while Postgres is away."""

from __future__ import annotations

from aiohttp import web

from services.core.settings import Settings
from services.ingress import handlers, tus
from services.web import openapi
from services.web.engines import lazy_pool_ctx, redis_ctx, storage_ctx
from services.web.http import base_app

# An attachment by id (a UUID) or by integer id; uploads and signed links by UUID only.
ID = r"{id:[0-9a-fA-F-]{36}|[0-9]{1,19}}"
UUID_ID = r"{id:[0-9a-fA-F-]{36}}"


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/attachments", handlers.create)
    app.router.add_patch(f"/v1/attachments/{ID}", handlers.update)
    app.router.add_delete(f"/v1/attachments/{ID}", handlers.cancel)
    app.router.add_get(f"/v1/uploads/{UUID_ID}", handlers.upload_status)
    tus.add_routes(app, UUID_ID)  # resumable uploads: /v1/uploads/tus and /v1/uploads/tus/{id}
    app.router.add_post("/v1/sessions/{token}/close", handlers.close_session)
    app.router.add_put("/v1/targets/{type}/{target_id}", handlers.put_target)
    app.router.add_put("/v1/targets/{type}/{target_id}/links/{field}", handlers.set_links)


def add_engines(app: web.Application) -> None:
    app.cleanup_ctx.extend([redis_ctx, storage_ctx, lazy_pool_ctx])


def create_app(settings: Settings) -> web.Application:
    app = base_app("ingress", settings)
    add_engines(app)
    add_routes(app)
    openapi.add_routes(app)
    if settings.console:  # the upload console: a page whose uploads come here
        from services.console import app as console

        console.add_routes(app)
    return app
