"""The one error shape of the API: ``{"error": {"code", "message", "field"}}``.

Every rule that refuses input raises :class:`ApiError`; the HTTP layer turns it
into a response and the workers put it into a job's outcome as the contract's
``ErrorInfo`` (:meth:`ApiError.to_info` / :meth:`ApiError.from_info`).
"""

from __future__ import annotations

from typing import Any

from services.core.contract import ErrorInfo


class ApiError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        status: int = 400,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        error.update(self.extra)
        return {"error": error}

    def to_info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message, status=self.status, field=self.field, extra=self.extra)

    @classmethod
    def from_info(cls, info: ErrorInfo) -> ApiError:
        return cls(info.code, info.message, field=info.field, status=info.status, extra=dict(info.extra))

    def __repr__(self) -> str:
        return f"ApiError({self.code!r}, {self.message!r}, field={self.field!r}, status={self.status})"


def bad_request(code: str, message: str, field: str | None = None) -> ApiError:
    return ApiError(code, message, field=field, status=400)


def not_found(what: str = "attachment") -> ApiError:
    return ApiError("not_found", f"{what} not found", status=404)
