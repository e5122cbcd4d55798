"""attachd's errors as exceptions: one class per kind of refusal, each carrying the API's error shape
(``{"error": {"code", "message", "field"}}``) and the HTTP status it came with."""

from __future__ import annotations

from typing import Any

import orjson


class AttachdError(Exception):
    """Anything attachd refused or could not do. ``status`` is None when no HTTP answer says it (a
    connection that failed, or a write whose job failed after it was accepted)."""

    def __init__(
        self, code: str, message: str, *, field: str | None = None, status: int | None = None, body: Any = None
    ) -> None:
        super().__init__(f"{code}: {message}" + (f" ({field})" if field else ""))
        self.code = code
        self.message = message
        self.field = field
        self.status = status
        self.body = body


class BadRequest(AttachdError):
    """400: a field or parameter is wrong; ``field`` names it."""


class Unauthorized(AttachdError):
    """401: no token, or one attachd does not accept (expired, revoked, wrong secret)."""


class Forbidden(AttachdError):
    """403: the token lacks the route's scope."""


class NotFound(AttachdError):
    """404: no such attachment, upload or file in the caller's account."""


class Conflict(AttachdError):
    """409: an Idempotency-Key in use, a finished upload, or a tus offset that is not the upload's."""


class Gone(AttachdError):
    """410: a resumable upload that expired."""


class TooLarge(AttachdError):
    """413: over the file limit."""


class Locked(AttachdError):
    """423: another request is writing the same resumable upload."""


class ChecksumMismatch(AttachdError):
    """460: a resumable upload's chunk arrived damaged and was dropped."""


class RateLimited(AttachdError):
    """429: the account's byte budget is spent for now."""


class ServerError(AttachdError):
    """5xx: attachd, or something it depends on, is failing; worth a retry later."""


class ConnectionFailed(AttachdError):
    """No answer at all: the connection could not be made, or broke."""


class UploadFailed(AttachdError):
    """A write attachd accepted, then refused when its job ran (an empty file, a file that is not what its
    name says...); ``code`` and ``field`` are the job's."""


_BY_STATUS: dict[int, type[AttachdError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: TooLarge,
    423: Locked,
    429: RateLimited,
    460: ChecksumMismatch,
}

# Codes for answers that carry no error body (a HEAD, a proxy's page).
_DEFAULT_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict"}


def error_class(status: int) -> type[AttachdError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else AttachdError


def error_from_response(status: int, payload: bytes) -> AttachdError:
    """The exception for an HTTP answer with this status and body: the error shape's code, message and
    field when the body has it, else what the status says."""
    body: Any = None
    if payload:
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            body = None
    error = body.get("error") if isinstance(body, dict) else None
    kind = error_class(status)
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return kind(error["code"], str(error.get("message", "")), field=error.get("field"), status=status, body=body)
    text = payload[:200].decode("utf-8", "replace").strip()
    return kind(_DEFAULT_CODES.get(status, f"http_{status}"), text or f"HTTP {status}", status=status, body=body)


def upload_failed(error: dict[str, Any]) -> UploadFailed:
    """The exception for a failed write's status (``GET /v1/uploads/{id}``: ``{"status": "failed", "error"}``)."""
    return UploadFailed(
        str(error.get("code", "failed")), str(error.get("message", "")), field=error.get("field"), body=error
    )
