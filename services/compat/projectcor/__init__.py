"""The ``projectcor`` profile: ProjectCor's task attachments (seed 002) under ``/compat/projectcor``."""

from services.compat.projectcor.handlers import add_routes

__all__ = ["add_routes"]
