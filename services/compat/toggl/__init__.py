"""The ``toggl`` profile: Toggl Focus's task attachments (``/api/organizations/{org}/workspaces/{ws}/tasks/
{task}/attachments``), mounted under ``/compat/toggl``."""

from services.compat.toggl.handlers import add_routes

__all__ = ["add_routes"]
