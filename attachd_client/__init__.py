"""A typed Python client for attachd's native API (async and sync), and the ``attachd upload``, ``ls``,
``get`` and ``rm`` commands (attachd_client/cli.py)."""

from attachd_client.client import UNSET, AsyncClient, Client
from attachd_client.errors import (
    AttachdError,
    BadRequest,
    ChecksumMismatch,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Gone,
    Locked,
    NotFound,
    RateLimited,
    ServerError,
    TooLarge,
    Unauthorized,
    UploadFailed,
)
from attachd_client.models import Attachment, FileLinks, Page, Target, UploadStatus

__all__ = [
    "UNSET",
    "AsyncClient",
    "AttachdError",
    "Attachment",
    "BadRequest",
    "ChecksumMismatch",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "FileLinks",
    "Forbidden",
    "Gone",
    "Locked",
    "NotFound",
    "Page",
    "RateLimited",
    "ServerError",
    "Target",
    "TooLarge",
    "Unauthorized",
    "UploadFailed",
    "UploadStatus",
]
