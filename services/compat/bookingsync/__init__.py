"""The ``bookingsync`` profile: BookingSync API v3's task_management attachments under
``/compat/bookingsync/api/v3/task_management/attachments``. ``inputs``, ``answers`` and ``errors``
translate (pure); ``handlers`` serve."""

from services.compat.bookingsync.handlers import add_routes

__all__ = ["add_routes"]
