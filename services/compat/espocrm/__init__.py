"""The EspoCRM profile: ``/compat/espocrm/api/v1/...`` answers as EspoCRM's Attachment API does.

``fields``: which record fields hold attachments; ``translate``: requests, records and errors both ways
(pure); ``credentials``: where the credential is; ``handlers``: the routes.
"""

from services.compat.espocrm.handlers import add_routes

__all__ = ["add_routes"]
