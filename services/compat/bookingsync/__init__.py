"""The ``bookingsync`` profile: BookingSync API v3's task_management attachments under
``/compat/bookingsync/api/v3/task_management/attachments``. ``shapes`` translates, ``handlers`` serves."""

from services.compat.bookingsync.handlers import add_routes

__all__ = ["add_routes"]
