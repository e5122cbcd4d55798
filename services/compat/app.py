"""The compat app: every profile under ``/compat/<name>/``, with the engines both reads and writes need."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from services.compat import autotask, bookingsync, espocrm, projectcor, toggl
from services.core.settings import Settings
from services.web.engines import pool_ctx, redis_ctx, storage_ctx
from services.web.http import base_app

PREFIX = "/compat"

# name -> add_routes(router, prefix): each profile registers its seed's paths under /compat/<name>.
ProfileRoutes = Callable[[web.UrlDispatcher, str], None]


def profiles() -> dict[str, ProfileRoutes]:
    return {
        "bookingsync": bookingsync.add_routes,
        "espocrm": espocrm.add_routes,
        "autotask": autotask.add_routes,
        "toggl": toggl.add_routes,
        "projectcor": projectcor.add_routes,
    }


def add_routes(app: web.Application) -> None:
    for name, add in profiles().items():
        add(app.router, f"{PREFIX}/{name}")


def add_engines(app: web.Application) -> None:
    app.cleanup_ctx.extend([redis_ctx, pool_ctx, storage_ctx])


def create_app(settings: Settings) -> web.Application:
    app = base_app("compat", settings)
    add_engines(app)
    add_routes(app)
    return app
