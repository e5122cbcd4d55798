"""The one error shape of the API: ``{"error": {"code", "message", "field"}}``.

Every rule that refuses input raises :class:`ApiError`; the HTTP layer turns it
into a response and the workers put it, as a dict, into a job's outcome. The
error travels through Redis as JSON, so it must round-trip through
:meth:`ApiError.to_dict` / :meth:`ApiError.from_dict`.
"""

from __future__ import annotations

from typing import Any


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

    def to_dict(self) -> dict[str, Any]:
        return {**self.body()["error"], "status": self.status}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApiError:
        data = dict(data)
        status = data.pop("status", 400)
        code = data.pop("code")
        message = data.pop("message")
        field = data.pop("field", None)
        return cls(code, message, field=field, status=status, extra=data)

    def __repr__(self) -> str:
        return f"ApiError({self.code!r}, {self.message!r}, field={self.field!r}, status={self.status})"


def bad_request(code: str, message: str, field: str | None = None) -> ApiError:
    return ApiError(code, message, field=field, status=400)


def not_found(what: str = "attachment") -> ApiError:
    return ApiError("not_found", f"{what} not found", status=404)
