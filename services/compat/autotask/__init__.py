"""The Autotask profile: AttachmentInfo and the parents' attachment child collections of Autotask's REST API
(``/atservicesrest/v1.0/...``), on the native core. ``entities`` holds Autotask's tables, ``translate`` and
``paging`` the pure translations, ``handlers`` the routes."""

from services.compat.autotask.handlers import add_routes

__all__ = ["add_routes"]
